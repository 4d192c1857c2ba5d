"""The names of what falemu makes: runner ids, runner container names, and its own owner label.

Dependency-free on purpose: the early launch of an unchanged ``falemu up`` (:mod:`falemu.prelaunch`)
makes the same names before the rest of falemu is imported, and the runtime and the scaler use them
from here, so the two always agree.
"""

from __future__ import annotations

import os
import re
import socket


def token(nbytes: int) -> str:
    """``nbytes`` random bytes as hex (what ``secrets.token_hex`` returns, without its imports)."""
    return os.urandom(nbytes).hex()


def new_runner_id(alias: str) -> str:
    """``<app>-<4 hex digits>``: what a runner is called in events, logs and ``FAL_RUNNER_ID``."""
    return f"{alias}-{token(2)}"


def container_name(alias: str, runner_id: str) -> str:
    """``falemu-<app>-<runner>-<random>``: readable in `docker ps`, unique on the engine.

    Docker takes ASCII letters, digits, ``_.-`` in names: anything else becomes ``-``, and a long app
    name is cut (the random part keeps names unique).
    """

    def ascii_safe(text: str, limit: int) -> str:
        return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-._")[:limit].rstrip("-._")

    runner = runner_id.removeprefix(alias).lstrip("-") or runner_id  # runner ids start with the app's name
    parts = [ascii_safe(alias, 40) or "app", ascii_safe(runner, 24), token(3)]
    return "falemu-" + "-".join(part for part in parts if part)


def hostname() -> str:
    return socket.gethostname()


def process_start_time(pid: int) -> str:
    """The start time of ``pid`` in clock ticks since boot (Linux), or "" where unknown."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            stat = fh.read()
    except OSError:
        return ""
    # The command name (field 2) may contain spaces; fields after its closing parenthesis are fixed.
    fields = stat.rpartition(")")[2].split()
    return fields[19] if len(fields) > 19 else ""


def owner_label() -> str:
    """``<pid>@<host>`` of this process: whose runners they are (falemu.runtime.labels.OWNER)."""
    return f"{os.getpid()}@{hostname()}"
