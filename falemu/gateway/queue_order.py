"""Where each queued request of an app stands: arrival order, normal priority before low.

``X-Fal-Queue-Priority: low`` requests wait until no normal-priority request of the app is queued
(:meth:`QueueOrder.acquire_low` gives up a runner wait as soon as a normal one queues up), but not
past their own start deadline.
"""

from __future__ import annotations

import asyncio
import bisect

from falemu.gateway.queue_record import QueuedRequest
from falemu.scaling.pool import Lease, RunnerPool


class QueueOrder:
    """The seqs of the requests waiting in each app's queue, and the priority signals."""

    def __init__(self) -> None:
        self._waiting: dict[str, list[int]] = {}  # alias -> sorted seqs of IN_QUEUE requests
        self._normal_waiting: dict[str, int] = {}
        self._normal_clear: dict[str, asyncio.Event] = {}  # set while no normal-priority request waits
        self._normal_arrived: dict[str, asyncio.Event] = {}  # set while one does

    def position(self, rec: QueuedRequest) -> int:
        seqs = self._waiting.get(rec.alias, [])
        return bisect.bisect_left(seqs, rec.seq)

    def add(self, rec: QueuedRequest) -> None:
        bisect.insort(self._waiting.setdefault(rec.alias, []), rec.seq)
        if rec.priority != "low":
            self._normal_waiting[rec.alias] = self._normal_waiting.get(rec.alias, 0) + 1
            self.normal_clear_event(rec.alias).clear()
            self.normal_present(rec.alias).set()

    def remove(self, rec: QueuedRequest) -> None:
        seqs = self._waiting.get(rec.alias, [])
        i = bisect.bisect_left(seqs, rec.seq)
        if i < len(seqs) and seqs[i] == rec.seq:
            del seqs[i]
            if rec.priority != "low":
                left = self._normal_waiting.get(rec.alias, 1) - 1
                self._normal_waiting[rec.alias] = left
                if left <= 0:
                    self.normal_clear_event(rec.alias).set()
                    self.normal_present(rec.alias).clear()

    def normal_present(self, alias: str) -> asyncio.Event:
        event = self._normal_arrived.get(alias)
        if event is None:
            event = self._normal_arrived[alias] = asyncio.Event()
        if self._normal_waiting.get(alias, 0) > 0:
            event.set()
        return event

    def normal_clear_event(self, alias: str) -> asyncio.Event:
        event = self._normal_clear.get(alias)
        if event is None:
            event = self._normal_clear[alias] = asyncio.Event()
            event.set()
        return event

    async def acquire_low(self, rec: QueuedRequest, pool: RunnerPool, remaining: float | None) -> Lease | None:
        """Wait for a runner unless a normal-priority request queues up meanwhile (then None)."""
        acquiring = asyncio.ensure_future(pool.acquire(rec.id, start_timeout=remaining, hint=rec.runner_hint))
        normal = asyncio.ensure_future(self.normal_present(rec.alias).wait())
        try:
            await asyncio.wait({acquiring, normal}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            # Cancelled (the request, or the gateway closing) after the pool granted the runner but
            # before this task resumed: nobody else holds that lease, so hand it back.
            if acquiring.done() and not acquiring.cancelled() and acquiring.exception() is None:
                await pool.release(acquiring.result(), "ok")
            raise
        finally:
            normal.cancel()
            if not acquiring.done():
                acquiring.cancel()
        try:
            return await acquiring
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise
            return None
