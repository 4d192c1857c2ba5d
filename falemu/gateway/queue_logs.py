"""Runner log lines for queued requests: a line belongs to the requests in flight on its runner.

A line a runner writes while a queued request runs on it goes to that request's ``logs`` (every
request in flight on it with ``max_multiplexing`` > 1), and so does a line that arrives up to
:data:`LOG_GRACE_SECONDS` after the request ended: log readers lag the HTTP answer a little.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from falemu.gateway.queue_record import QueuedRequest

MAX_LOG_ENTRIES = 10_000
LOG_GRACE_SECONDS = 1.0  # a runner's lines this soon after a request ended still belong to it


class RequestLogs:
    """Which queued requests take which runner's lines (used on the gateway's event loop)."""

    def __init__(self) -> None:
        self._on_runner: dict[str, list[QueuedRequest]] = {}  # runner id -> requests in flight on it
        self._recent: dict[str, tuple[float, list[QueuedRequest]]] = {}

    def attach(self, rec: QueuedRequest) -> None:
        assert rec.runner is not None
        self._on_runner.setdefault(rec.runner, []).append(rec)
        self._recent.pop(rec.runner, None)

    def detach(self, rec: QueuedRequest) -> None:
        runner = rec.runner
        if runner is None:
            return
        active = self._on_runner.get(runner, [])
        if rec in active:
            active.remove(rec)
        if not active:
            self._on_runner.pop(runner, None)
        now = time.monotonic()
        _, recent = self._recent.get(runner, (now, []))
        self._recent[runner] = (now, [*recent[-7:], rec])

    def wants(self, runner: str) -> bool:
        """Whether a queued request may take this runner's log lines now (callable from any thread)."""
        return runner in self._on_runner or runner in self._recent

    def line(self, runner: str, line: str, stream: str, ts: float) -> None:
        targets = self._on_runner.get(runner)
        if not targets:
            recent = self._recent.get(runner)
            if recent is None or time.monotonic() - recent[0] > LOG_GRACE_SECONDS:
                return
            targets = recent[1]
        entry: dict[str, Any] = {
            "timestamp": dt.datetime.fromtimestamp(ts, tz=dt.UTC).isoformat(),
            "message": line,
            "level": "STDERR" if stream == "stderr" else "STDOUT",
            "source": "USER",
            "labels": {},
        }
        for rec in targets:
            if len(rec.logs) < MAX_LOG_ENTRIES:
                rec.logs.append(entry)
                rec.touch()
