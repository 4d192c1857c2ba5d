"""Runner addresses that Docker may hand to another container: who holds each one, checked at connect.

A runner reached at its container's bridge address (see ``DockerRuntime._route_direct``) shares that
address with whichever container the engine starts next once the runner has died: Docker gives a
freed address to the next container at once. A request leased to a runner that died a moment ago
would then open its connection to another app's server listening on the same port. The runtime
claims each direct address with the container's init process (its host PID and start time); before
the gateway opens a new connection to an address it asks :func:`holder_alive`, which answers from
``/proc`` in microseconds. Kept-alive connections need no check: a dead container's sockets are gone
with it, so they fail and never reach another container.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

_lock = threading.Lock()
_claims: dict[tuple[str, int], _Holder] = {}


@dataclass(frozen=True, slots=True)
class _Holder:
    pid: int
    started: str  # field 22 of /proc/<pid>/stat: tells a process from a later one with the same PID


def process_start(pid: int) -> str | None:
    """The start time of process ``pid`` as ``/proc`` shows it, or None when this host does not see it."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            raw = stat.read()
    except OSError:
        return None
    fields = raw[raw.rfind(b")") + 2 :].split()  # after the command name, which may hold spaces
    return fields[19].decode() if len(fields) > 19 else None


def claim(host: str, port: int, pid: int) -> bool:
    """Note that ``host:port`` belongs to the process ``pid``; False when this host cannot see it."""
    started = process_start(pid) if pid > 0 else None
    if started is None:
        return False
    with _lock:
        _claims[(host, port)] = _Holder(pid, started)
    return True


def release(host: str, port: int, pid: int) -> None:
    """Forget ``host:port``'s claim if ``pid`` still holds it (a later runner may have claimed it again)."""
    with _lock:
        holder = _claims.get((host, port))
        if holder is not None and holder.pid == pid:
            del _claims[(host, port)]


def holder_alive(host: str, port: int) -> bool:
    """False when ``host:port`` was claimed by a process that has exited; True otherwise."""
    holder = _claims.get((host, port))
    return holder is None or process_start(holder.pid) == holder.started
