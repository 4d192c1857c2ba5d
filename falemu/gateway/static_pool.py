"""A :class:`~falemu.scaling.pool.RunnerPool` over runners that are already running.

No scaling: it leases the given runners, ``max_multiplexing`` requests each, to waiters in arrival
order. A runner released with ``replace`` is dropped and, when a ``replace`` factory is given,
swapped for the runner it returns. Used to put the gateway in front of servers falemu did not start
(tests, benchmarks), and as the reference for the pool's lease rules.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from falemu.config.model import AppConfig
from falemu.runtime.base import Runner
from falemu.scaling.pool import Lease, Outcome, RequestStartTimeout, RunnerInfo


@dataclass
class _Slot:
    runner: Runner
    in_flight: int = 0
    served: int = 0
    started_at: float = field(default_factory=time.time)
    last_request_at: float | None = None
    hints: frozenset[str] = frozenset()


class StaticPool:
    def __init__(
        self,
        app: AppConfig,
        runners: Sequence[Runner],
        *,
        replace: Callable[[Runner], Runner | None] | None = None,
    ) -> None:
        self.app = app
        self._slots = [_Slot(r) for r in runners]
        self._replace = replace
        self._waiters: collections.deque[asyncio.Future[Lease]] = collections.deque()
        self.replaced: list[str] = []  # ids of runners released with "replace", oldest first
        self.outcomes: list[tuple[str, Outcome]] = []  # (request id, outcome) per release
        self.acquired: list[tuple[str, str]] = []  # (request id, runner id) per lease

    @property
    def capacity(self) -> int:
        return max(1, self.app.scaling.max_multiplexing)

    def _free_slot(self, hint: str | None = None) -> _Slot | None:
        best: _Slot | None = None
        hinted: _Slot | None = None
        for slot in self._slots:
            if slot.in_flight >= self.capacity:
                continue
            if best is None or slot.in_flight < best.in_flight:
                best = slot
            if hint is not None and hint in slot.hints and (hinted is None or slot.in_flight < hinted.in_flight):
                hinted = slot
        return hinted or best

    def _lease(self, slot: _Slot, request_id: str) -> Lease:
        slot.in_flight += 1
        slot.last_request_at = time.time()
        self.acquired.append((request_id, slot.runner.id))
        return Lease(runner=slot.runner, request_id=request_id, started=time.monotonic())

    def try_acquire(self, request_id: str, hint: str | None = None) -> Lease | None:
        if self._waiters:
            return None
        slot = self._free_slot(hint)
        return self._lease(slot, request_id) if slot is not None else None

    async def acquire(self, request_id: str, *, start_timeout: float | None = None, hint: str | None = None) -> Lease:
        lease = self.try_acquire(request_id, hint)
        if lease is not None:
            return lease
        fut: asyncio.Future[Lease] = asyncio.get_running_loop().create_future()
        fut.request_id = request_id  # type: ignore[attr-defined]
        self._waiters.append(fut)
        try:
            async with asyncio.timeout(start_timeout):
                return await asyncio.shield(fut)
        except TimeoutError:
            if fut.done() and not fut.cancelled():
                return fut.result()  # granted as the timeout fired
            raise RequestStartTimeout(f"no runner within {start_timeout} s") from None
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release_nowait(fut.result(), "ok")  # granted and cancelled at once: not lost
            raise
        finally:
            if not fut.done():
                fut.cancel()
                if fut in self._waiters:
                    self._waiters.remove(fut)

    async def release(self, lease: Lease, outcome: Outcome = "ok") -> None:
        self.release_nowait(lease, outcome)

    def release_nowait(self, lease: Lease, outcome: Outcome = "ok") -> None:
        self.outcomes.append((lease.request_id, outcome))
        slot = next((s for s in self._slots if s.runner is lease.runner), None)
        if slot is None:
            return
        slot.in_flight -= 1
        slot.served += 1
        if outcome == "replace":
            self.replaced.append(slot.runner.id)
            self._slots.remove(slot)
            if self._replace is not None:
                new = self._replace(slot.runner)
                if new is not None:
                    self._slots.append(_Slot(new))
        self._wake()

    def _wake(self) -> None:
        while self._waiters:
            slot = self._free_slot()
            if slot is None:
                return
            fut = self._waiters.popleft()
            if fut.done():
                continue
            fut.set_result(self._lease(slot, getattr(fut, "request_id", "")))

    def set_hints(self, runner_id: str, hints: Sequence[str]) -> None:
        for slot in self._slots:
            if slot.runner.id == runner_id:
                slot.hints = frozenset(hints)

    def runners(self) -> list[RunnerInfo]:
        return [
            RunnerInfo(
                id=s.runner.id,
                app=self.app.alias,
                state="RUNNING" if s.in_flight else "IDLE",
                url=s.runner.url,
                in_flight=s.in_flight,
                served=s.served,
                started_at=s.started_at,
                last_request_at=s.last_request_at,
            )
            for s in self._slots
        ]
