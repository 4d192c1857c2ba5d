"""Faults from tests: ``falemu_app.faults`` (and ``AppHandle.faults`` of :mod:`falemu.testing`).

::

    def test_client_retries_a_503_storm(falemu_app):
        storm = falemu_app.faults.error(503, count=3)    # the next 3 requests get fal's 503
        assert my_client.generate("a cat") is not None   # ... which my client retries
        assert storm.ended and storm.applied == 3

    def test_a_runner_dies_mid_request(falemu_app):
        falemu_app.faults.kill(after=0.5)                # the runner of the next request, 0.5 s in
        handle = falemu_app.submit("/slow", {...})
        assert handle.result()                           # fal's queue retried it on a new runner

Every fault is bounded (a count or a window) and the pytest plugin clears the faults a test added
when it ends: nothing carries over to the next test.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from falemu.chaos.faults import FaultSpec, parse_spec

if TYPE_CHECKING:
    from falemu.chaos.faults import Fault
    from falemu.emulator import Emulator


class FaultHandle:
    """One injected fault: ``id``, ``description``, and whether it ended and what it hit so far."""

    __test__ = False

    def __init__(self, faults: Faults, fault: Fault) -> None:
        self._faults = faults
        self._fault = fault
        self.id = fault.id
        self.description = fault.spec.describe()

    @property
    def applied(self) -> int:
        """Requests, starts or runners it hit."""
        return self._fault.applied

    @property
    def ended(self) -> bool:
        return self._fault.ended is not None

    @property
    def end_reason(self) -> str | None:
        return self._fault.ended

    @property
    def targets(self) -> list[str]:
        """The runners it hit (kill, data)."""
        return list(self._fault.targets)

    def wait_ended(self, timeout: float = 60.0) -> None:
        """Wait until its count or window ran out."""
        deadline = time.monotonic() + timeout
        while not self.ended:
            if time.monotonic() > deadline:
                raise TimeoutError(f"fault {self.id} ({self.description}) still in effect after {timeout:g} s")
            time.sleep(0.02)

    def clear(self) -> None:
        """End it now."""
        if not self.ended:
            self._faults._call("clear", self.id, None)

    def __repr__(self) -> str:
        return f"<fault {self.id}: {self.description}{' (ended)' if self.ended else ''}>"


class Faults:
    """Inject faults into one app of a running emulator (see the module docstring)."""

    __test__ = False

    def __init__(self, emulator: Emulator, app: str) -> None:
        self._emulator = emulator
        self.app = app
        self.added: list[FaultHandle] = []

    def _call(self, method: str, *args: Any) -> Any:
        chaos = self._emulator.chaos

        async def on_loop() -> Any:
            return getattr(chaos, method)(*args)

        return self._emulator.call(on_loop(), timeout=30)

    def add(self, **spec: Any) -> FaultHandle:
        """Any fault, as a spec (see :mod:`falemu.chaos.faults`): ``faults.add(kind="cut", after_bytes=10)``."""
        parsed: FaultSpec = parse_spec({"app": self.app, **{k: v for k, v in spec.items() if v is not None}})
        handle = FaultHandle(self, self._call("add", parsed))
        self.added.append(handle)
        return handle

    def kill(self, runner: str | None = None, *, after: float = 0.0, count: int | None = None) -> FaultHandle:
        """Kill ``runner``, or the runner that takes the next request ``after`` seconds after it took it
        (``count`` times: the next ``count`` requests' runners)."""
        return self.add(kind="kill", runner=runner, after=after, count=count)

    def fail_starts(self, count: int = 1) -> FaultHandle:
        """The next ``count`` runner starts fail, as a ``setup()`` that raises (FAILURE_DELAY follows)."""
        return self.add(kind="starts", mode="fail", count=count)

    def slow_starts(self, delay: float, count: int = 1) -> FaultHandle:
        """The next ``count`` runner starts take ``delay`` seconds more (past ``startup_timeout``: they fail)."""
        return self.add(kind="starts", mode="slow", delay=delay, count=count)

    def error(
        self,
        status: int = 503,
        *,
        error_type: str | None = None,
        share: float = 1.0,
        count: int | None = None,
        seconds: float | None = None,
    ) -> FaultHandle:
        """The gateway answers ``status`` (503, 504, 429) with fal's error type instead of the runner."""
        return self.add(kind="error", status=status, error_type=error_type, share=share, count=count, seconds=seconds)

    def latency(
        self, delay: float, *, share: float = 1.0, count: int | None = None, seconds: float | None = None
    ) -> FaultHandle:
        """``delay`` seconds more before requests reach their runner."""
        return self.add(kind="latency", delay=delay, share=share, count=count, seconds=seconds)

    def cut(
        self, after_bytes: int = 0, *, share: float = 1.0, count: int | None = None, seconds: float | None = None
    ) -> FaultHandle:
        """Cut the runner connection after ``after_bytes`` bytes of the response body."""
        return self.add(kind="cut", after_bytes=after_bytes, share=share, count=count, seconds=seconds)

    def data(self, mode: str = "read-only", *, runners: int = 1, seconds: float | None = None) -> FaultHandle:
        """``/data`` read-only (``"read-only"``) or full (``"full"``) for the next ``runners`` runners
        (falemu replaces that many runners now, so it takes effect at once)."""
        return self.add(kind="data", mode=mode, runners=runners, seconds=seconds)

    def active(self) -> list[dict[str, Any]]:
        """This app's faults in effect."""
        rows: list[dict[str, Any]] = self._call("rows")
        return [row for row in rows if row["app"] == self._alias() and row["ended"] is None]

    def clear(self, *, settle: float = 60.0) -> None:
        """End every fault of this app, then wait (up to ``settle`` seconds) until the runners it replaces
        have started and stopped."""
        self._call("clear", None, self.app)
        controller = self._emulator.controller(self.app)
        self._emulator.call(controller.settle(timeout=settle), timeout=settle + 5)
        self.added.clear()

    def _alias(self) -> str:
        return self._emulator.controller(self.app).name
