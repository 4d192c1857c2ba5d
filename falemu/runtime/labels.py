"""Labels on everything falemu creates, and who owns it.

Every runner container carries ``falemu.app``, ``falemu.runner``, ``falemu.project`` (the project
folder the app comes from), ``falemu.owner`` (``<pid>@<host>`` of the falemu process that made it, plus
that process's start time so a reused pid is not mistaken for the owner) and ``falemu.version``.
Cleanup only ever looks at containers with these labels.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from falemu import __version__
from falemu.names import hostname as hostname
from falemu.names import owner_label as owner_label
from falemu.names import process_start_time as process_start_time

APP = "falemu.app"
RUNNER = "falemu.runner"
OWNER = "falemu.owner"
PROJECT = "falemu.project"
OWNER_STARTED = "falemu.owner-started"
VERSION = "falemu.version"
IMAGE_HASH = "falemu.image-hash"


def project_label(project: Path | str) -> str:
    """How a project folder is written in :data:`PROJECT`: its absolute, resolved path."""
    return str(Path(project).resolve())


def runner_labels(app: str, runner: str, project: Path | str | None = None) -> dict[str, str]:
    labels = {
        APP: app,
        RUNNER: runner,
        OWNER: owner_label(),
        OWNER_STARTED: process_start_time(os.getpid()),
        VERSION: __version__,
    }
    if project is not None:
        labels[PROJECT] = project_label(project)
    return labels


@dataclass(frozen=True)
class Owner:
    pid: int
    host: str
    started: str = ""


def parse_owner(labels: Mapping[str, str]) -> Owner | None:
    pid_text, sep, host = labels.get(OWNER, "").partition("@")
    if not sep or not pid_text.isdigit():
        return None
    return Owner(int(pid_text), host, labels.get(OWNER_STARTED, ""))


def pid_alive(pid: int) -> bool:
    """True while process ``pid`` exists and has not exited.

    A killed process whose parent has not collected it yet (a zombie: ``falemu up &`` in a script whose
    shell is gone, under an init that reaps late or never) is gone, though ``kill(pid, 0)`` still finds it.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            state = fh.read().rpartition(")")[2].split()[:1]
    except OSError:  # no /proc (macOS): kill() is all there is
        return True
    return state != ["Z"]


def owner_gone(labels: Mapping[str, str]) -> bool:
    """True when the container's owner ran on this host and that process no longer exists.

    Containers made on another host are never judged gone: their owner cannot be checked from here.
    """
    owner = parse_owner(labels)
    if owner is None or owner.host != hostname():
        return False
    if not pid_alive(owner.pid):
        return True
    # The pid is alive; it is the owner only when it started at the recorded time.
    return bool(owner.started) and process_start_time(owner.pid) not in ("", owner.started)
