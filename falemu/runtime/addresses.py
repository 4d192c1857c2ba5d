"""Runner addresses that Docker may hand to another container: who holds each one, checked at connect.

A runner reached at its container's bridge address (see ``DockerRuntime._route_direct``) shares that
address with whichever container the engine starts next once the runner has died: Docker gives a
freed address to the next container at once. A request leased to a runner that died a moment ago
would then open its connection to another app's server listening on the same port. The runtime
claims each direct address with the container's init process (its host PID and start time) and gives
the runner that PID as its ``holder``; before the gateway opens a new connection for a runner it asks
:func:`holds`, which answers from ``/proc`` in microseconds: the address must still be claimed by that
runner's process, and the process alive. A runner that died, even one whose address a later runner of
this falemu now holds, is refused. Kept-alive connections are kept apart per holder, and a dead
container's sockets are gone with it.
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


def holds(host: str, port: int, holder: int) -> bool:
    """Whether the process ``holder`` (0: a runner reached by other means) still holds ``host:port``."""
    if not holder:
        return True
    claimed = _claims.get((host, port))
    return claimed is not None and claimed.pid == holder and process_start(holder) == claimed.started
