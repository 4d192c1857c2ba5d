"""Leaving nothing behind: exit hooks, orphan reaping and ``falemu down``.

* Normal stop, Ctrl-C and SIGTERM: :func:`install_exit_cleanup` registers ``runtime.close()`` with
  ``atexit`` and turns SIGTERM/SIGHUP into ``SystemExit`` so ``finally`` blocks and ``atexit`` run.
* SIGKILL cannot be caught: the next falemu start calls :func:`reap_orphans`, which removes runner
  containers whose owner process (``falemu.owner`` = ``pid@host``) ran on this host and is gone.
* ``falemu down``: :func:`remove_containers` removes every container with a ``falemu.app`` label.

Only containers with falemu's labels are ever looked at; nothing else on the engine is touched.
"""

from __future__ import annotations

import atexit
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import Any

from falemu.events import EventSink, Notice, null_sink
from falemu.runtime import labels


@dataclass(frozen=True)
class Removed:
    id: str
    name: str
    app: str
    runner: str


def falemu_containers(client: Any, app: str | None = None) -> list[Any]:
    """Every container (running or not) labelled by falemu, optionally of one app only."""
    wanted = f"{labels.APP}={app}" if app else labels.APP
    return list(client.containers.list(all=True, filters={"label": wanted}))


def _remove(container: Any) -> Removed | None:
    from docker.errors import APIError, NotFound

    meta = container.labels or {}
    try:
        container.remove(force=True, v=True)
    except NotFound:
        return None
    except APIError as exc:
        if getattr(exc, "status_code", None) == 409:  # removal already in progress
            return None
        raise
    return Removed(container.id, container.name, meta.get(labels.APP, ""), meta.get(labels.RUNNER, ""))


def remove_containers(client: Any, app: str | None = None) -> list[Removed]:
    """Force-remove every falemu container (of ``app`` when given). What ``falemu down`` does."""
    removed = [_remove(c) for c in falemu_containers(client, app)]
    return [r for r in removed if r is not None]


def reap_orphans(client: Any, events: EventSink = null_sink) -> list[Removed]:
    """Remove falemu containers whose owner process on this host no longer exists."""
    removed: list[Removed] = []
    for container in client.containers.list(all=True, filters={"label": labels.OWNER}):
        if labels.APP in (container.labels or {}) and labels.owner_gone(container.labels or {}):
            done = _remove(container)
            if done is not None:
                removed.append(done)
    if removed:
        names = ", ".join(sorted({r.app for r in removed}))
        events(
            Notice(
                names,
                level="info",
                message=f"removed {len(removed)} runner container(s) left by a falemu process that is gone ({names})",
            )
        )
    return removed


_installed: list[Callable[[], None]] = []
_install_lock = threading.Lock()


def _raise_exit(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def install_exit_cleanup(close: Callable[[], None]) -> None:
    """Run ``close`` at interpreter exit, including after Ctrl-C and SIGTERM.

    SIGTERM and SIGHUP get a handler raising ``SystemExit`` only when they still have the default
    handler (an event loop that installed its own keeps it), and only from the main thread.
    """
    with _install_lock:
        _installed.append(close)
        atexit.register(close)
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) is signal.SIG_DFL:
            signal.signal(sig, _raise_exit)
