"""A ``falemu up --json`` subprocess whose JSON events the tests read line by line."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest


def user_env(home: Path, base_image: str, drop: tuple[str, ...] = (), **extra: str) -> dict[str, str]:
    """The environment of a `falemu up` user of their own: config, cache, runtime and data folders in
    ``home``, the offline base image for builds; this process's environment less the ``drop`` prefixes."""
    kept = {k: v for k, v in os.environ.items() if not (drop and k.startswith(drop))}
    return dict(
        kept,
        XDG_CONFIG_HOME=str(home / "config"),
        XDG_CACHE_HOME=str(home / "cache"),
        XDG_RUNTIME_DIR=str(home / "run"),
        FALEMU_DATA_DIR=str(home / "data"),
        FALEMU_BUILD_ARG_BASE_IMAGE=base_image,
        PYTHONUNBUFFERED="1",
        **extra,
    )


class UpProcess:
    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def wait_for(self, event: str, timeout: float = 240) -> dict[str, Any]:
        """The first event of that kind printed from now on; fails with the output when none comes."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            self.seen.append(line)
            try:
                data = json.loads(line)
            except ValueError:
                continue
            if isinstance(data, dict) and data.get("event") == event:
                return data
        pytest.fail(f"falemu up printed no {event} event; output:\n" + "\n".join(self.seen[-50:]))
