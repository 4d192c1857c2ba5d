"""Leaving nothing behind: exit hooks, orphan reaping and ``falemu down``.

* Normal stop, Ctrl-C and SIGTERM: :func:`install_exit_cleanup` registers ``runtime.close()`` with
  ``atexit`` and turns SIGTERM/SIGHUP into ``SystemExit`` so ``finally`` blocks and ``atexit`` run.
* SIGKILL cannot be caught: the next falemu start calls :func:`reap_orphans`, which removes runner
  containers whose owner process (``falemu.owner`` = ``pid@host``) ran on this host and is gone.
* ``falemu down``: :func:`remove_containers` removes every container with a ``falemu.app`` label;
  with ``--app`` or ``--project``, :func:`plan_down` keeps to one project's runners (``falemu.project``)
  and says which runners of the same app name it leaves alone, and why.

Only containers with falemu's labels are ever looked at; nothing else on the engine is touched.
"""

from __future__ import annotations

import atexit
import signal
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from falemu.events import EventSink, Notice, null_sink
from falemu.runtime import labels

if TYPE_CHECKING:
    from falemu.runtime.engine_api import EngineAPI


@dataclass(frozen=True)
class Removed:
    id: str
    name: str
    app: str
    runner: str


def falemu_containers(client: Any, app: str | None = None) -> list[Any]:
    """Every container (running or not) labelled by falemu, optionally of one app only."""
    wanted = f"{labels.APP}={app}" if app else labels.APP
    # Containers of other falemu processes come and go meanwhile: one gone between list and inspect is skipped.
    return list(client.containers.list(all=True, filters={"label": wanted}, ignore_removed=True))


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


@dataclass(frozen=True)
class Skipped:
    name: str
    app: str
    runner: str
    reason: str


@dataclass
class DownPlan:
    remove: list[Any] = field(default_factory=list)  # containers
    skipped: list[Skipped] = field(default_factory=list)


def plan_down(
    containers: Iterable[Any],
    *,
    apps: set[str] | None,
    project: Path | None,
    live_projects: Mapping[int, str],
) -> DownPlan:
    """What ``falemu down --app/--project`` removes: runners of ``apps`` (all apps when None) of
    ``project`` only, and what it leaves alone with the reason.

    A runner's project is its ``falemu.project`` label, or, for one made by an older falemu, the project
    of the running ``falemu up`` that owns it (``live_projects``: pid to project folder). With no
    ``project`` (``--app`` outside any project), a runner of a live falemu process is left alone; one
    whose process is gone is removed. A runner whose project is unknown goes only when its process is gone.
    """
    wanted = labels.project_label(project) if project is not None else None
    plan = DownPlan()
    for container in containers:
        meta: Mapping[str, str] = container.labels or {}
        app = meta.get(labels.APP, "")
        if apps is not None and app not in apps:
            continue
        owner = labels.parse_owner(meta)
        live = owner is not None and not labels.owner_gone(meta)
        theirs = meta.get(labels.PROJECT) or (live_projects.get(owner.pid) if live and owner is not None else None)
        by = f", served by the falemu process of pid {owner.pid}" if live and owner is not None else ""
        reason = ""
        if theirs is not None and wanted is not None:
            if theirs != wanted:
                reason = f"it belongs to project {theirs}{by}"
        elif theirs is not None:
            if live:
                reason = f"it belongs to project {theirs}{by}: add --project {theirs} to remove it"
        elif live:
            reason = f"its project is unknown (made by an older falemu){by}: `falemu down` alone removes it"
        if reason:
            plan.skipped.append(Skipped(container.name, app, meta.get(labels.RUNNER, ""), reason))
        else:
            plan.remove.append(container)
    return plan


def remove_planned(plan: DownPlan) -> list[Removed]:
    removed = [_remove(c) for c in plan.remove]
    return [r for r in removed if r is not None]


def reap_orphans(api: EngineAPI, events: EventSink = null_sink) -> list[Removed]:
    """Remove falemu containers whose owner process on this host no longer exists."""
    removed: list[Removed] = []
    for container in api.containers(labels.OWNER):
        meta = container.get("Labels") or {}
        if labels.APP in meta and labels.owner_gone(meta) and api.remove(str(container["Id"])):
            name = str((container.get("Names") or [""])[0]).lstrip("/")
            removed.append(Removed(str(container["Id"]), name, meta.get(labels.APP, ""), meta.get(labels.RUNNER, "")))
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
