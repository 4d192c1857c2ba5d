"""A ``falemu up --json`` subprocess whose JSON events the tests read line by line."""

from __future__ import annotations

import json
import queue
import subprocess
import threading
import time
from typing import Any

import pytest


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
