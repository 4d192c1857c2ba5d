"""The scaling controller: one :class:`AppController` per app applies the policy through the Runtime.

It is the :class:`~falemu.scaling.pool.RunnerPool` the gateway talks to. Everything runs on one asyncio
event loop (the gateway's); the Runtime's blocking calls run in worker threads. The policy
(:mod:`falemu.scaling.policy`) is evaluated on a periodic tick and after every acquire, release, start
and stop (the gateway's fast path releases with :meth:`AppController.release_nowait`, whose
evaluations of a busy stretch are spaced :data:`RELEASE_EVALUATION_INTERVAL` apart). Requests that
find no runner with spare ``max_multiplexing`` capacity wait in FIFO order.

Runner states follow fal's: PENDING (start ordered) -> SETUP (the runtime is starting it) -> IDLE /
RUNNING (ready; RUNNING while it has requests in flight) -> DRAINING (asked to stop while busy) ->
TERMINATING -> TERMINATED; a failed start goes to FAILURE_DELAY and holds further starts back
(+30 s per consecutive failure, capped at 600 s).

Revisions: every runner belongs to a revision of the app (1 at start). Requests, the policy and the
back-off see only the runners of :attr:`AppController.revision`, the one fal's alias points at. A
rollout (:mod:`falemu.devloop.rollout`) starts runners of the next revision beside them with
:meth:`AppController.launch_revision`, then :meth:`AppController.switch_to` makes it the serving
revision and retires the older runners: idle ones stop, busy ones drain (their requests finish).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import itertools
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

from falemu import prelaunch
from falemu.clock import Clock, MonotonicClock
from falemu.config.model import AppConfig
from falemu.errors import RunnerError, StartupTimeout
from falemu.events import (
    Event,
    EventSink,
    Notice,
    RunnerFailed,
    RunnerLog,
    RunnerReady,
    RunnerStateChanged,
    RunnerStopped,
    ScaledDown,
    ScaledUp,
    null_sink,
)
from falemu.names import new_runner_id
from falemu.runtime.base import Runner, RunnerSpec, Runtime
from falemu.scaling.policy import (
    LIVE_STATES,
    NEVER_SERVED_REAP_SECONDS,
    SERVING_STATES,
    Decision,
    RunnerState,
    RunnerView,
    backoff_seconds,
    decide,
    target_runners,
)
from falemu.scaling.pool import Lease, Outcome, RequestStartTimeout, RunnerInfo
from falemu.scaling.slots import (
    FaultHooks,
    PoolStats,
    Slot,
    StartFault,
    Waiter,
    as_runner_error,
    wait_for_tasks,
)

__all__ = ["RELEASE_EVALUATION_INTERVAL", "AppController", "FaultHooks", "PoolStats", "StartFault"]

S = RunnerState

# A busy gateway releases thousands of leases a second; after a plain one ("ok") the policy runs at
# most this often. What a release can change (a keep_alive deadline, a scale-in) is due seconds
# later, so the decision is at most this late; waiters get the freed capacity at once regardless.
RELEASE_EVALUATION_INTERVAL = 0.05


class AppController:
    """A :class:`~falemu.scaling.pool.RunnerPool` for one app on top of a Runtime.

    ``spec`` is the template every runner starts from; its ``runner_id`` and ``on_log`` are filled in
    per runner. Create it inside the event loop it will run in, then ``await start()``.
    """

    def __init__(
        self,
        app: AppConfig,
        runtime: Runtime,
        spec: RunnerSpec,
        *,
        clock: Clock | None = None,
        events: EventSink = null_sink,
        tick: float = 0.2,
        health_interval: float = 2.0,
    ) -> None:
        self.app = app
        self.runtime = runtime
        self.clock: Clock = clock or MonotonicClock()
        self.events = events
        self.stats = PoolStats()
        self._spec = spec
        self._tick_seconds = tick
        self._health_interval = health_interval
        self._slots: dict[str, Slot] = {}
        self._waiters: collections.deque[Waiter] = collections.deque()
        self._tasks: set[asyncio.Task[None]] = set()  # starts and stops in progress
        self._stop_tasks: set[asyncio.Task[None]] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self._lock = threading.Lock()  # guards _slots for readers on other threads (runners())
        self._failures = 0
        self._last_failure_at: float | None = None
        self._last_error: RunnerError | None = None
        self._closed = False
        self._last_health = time.monotonic()
        self._next_change: float | None = None
        self._health_task: asyncio.Task[None] | None = None
        self._reconcile_handle: asyncio.Handle | None = None
        self._reconciled_at = float("-inf")  # clock time of the last policy evaluation
        self._event_loop: asyncio.AbstractEventLoop | None = None  # the loop start() ran on
        self.revision = 1  # the serving revision: the only one requests and the policy see
        self._hold_starts = False  # no policy starts (a recreate rollout waits for the old runners to go)
        self._changed: asyncio.Event | None = None  # set on the next runner state change (wait_for)
        self._start_errors: dict[str, RunnerError] = {}  # failed starts of non-serving revisions, by runner
        self.faults: FaultHooks | None = None  # set by falemu.chaos while a fault of this app is in effect
        self._begun: dict[str, concurrent.futures.Future[Runner]] = {}  # head_start()'s, until start() adopts them

    # -- RunnerPool ---------------------------------------------------------------------------------

    @property
    def name(self) -> str:
        """The app's deployed name (alias): what events and runner infos carry, as the runtime's do."""
        return self.app.alias

    def head_start(self, warm: int = 0) -> int:
        """Begin now, from the calling thread and before :meth:`start`, the runners ``start(warm)`` starts.

        Each one's runtime start runs at once in a thread of its own, so the engine and the runner's
        own start-up work while the caller readies the rest (``falemu up``: the queue store, the event
        loop, the gateway); :meth:`start` adopts them. Returns how many were begun. A controller that is
        closed without being started stops them once their starts return (:meth:`drop_head_starts`).
        """
        if self._event_loop is not None or self._closed:
            return 0
        count = self._initial(warm) - self._live_count()
        for _ in range(count):
            # A runner `falemu up` began before anything was loaded (falemu.prelaunch) takes its id.
            slot = self._new_slot(cold=False, revision=self.revision, rid=prelaunch.take_runner_id(self.name))
            spec = self._runner_spec(slot, self._spec)
            self._set_state(slot, S.SETUP)
            begun: concurrent.futures.Future[Runner] = concurrent.futures.Future()
            begun.set_running_or_notify_cancel()

            def run(spec: RunnerSpec = spec, begun: concurrent.futures.Future[Runner] = begun) -> None:
                try:
                    begun.set_result(self.runtime.start(spec, self._runtime_events))
                except BaseException as exc:
                    begun.set_exception(exc)

            threading.Thread(target=run, name=f"falemu-start-{slot.id}", daemon=True).start()
            self._begun[slot.id] = begun
        return max(0, count)

    def drop_head_starts(self) -> None:
        """Stop the runners :meth:`head_start` began that :meth:`start` never adopted, once they are up."""
        begun, self._begun = self._begun, {}
        for runner_id, future in begun.items():
            with self._lock:
                self._slots.pop(runner_id, None)

            def stop(future: concurrent.futures.Future[Runner]) -> None:
                if future.exception() is None:
                    with contextlib.suppress(Exception):
                        self.runtime.stop(future.result(), 0.0)

            future.add_done_callback(stop)

    async def start(self, warm: int = 0) -> None:
        """Start the tick, plus ``max(min_concurrency, warm)`` runners; return once those are ready.

        Raises :class:`RunnerError` when one of them fails to start.
        """
        self._event_loop = asyncio.get_running_loop()
        if self._loop_task is None:
            self._loop_task = asyncio.create_task(self._run_loop(), name=f"falemu-scaler-{self.name}")
        begun, self._begun = self._begun, {}
        slots = []
        for runner_id, future in begun.items():
            slot = self._slots[runner_id]
            self._spawn(self._run_start(slot, self._spec, begun=future), f"start-{slot.id}")
            slots.append(slot)
        slots += [self._launch(cold=False) for _ in range(self._initial(warm) - self._live_count())]
        if not slots:
            return
        await self.settle()
        failed = [s for s in slots if s.runner is None]
        if failed and self._last_error is not None:
            raise self._last_error

    def try_acquire(self, request_id: str, hint: str | None = None) -> Lease | None:
        if self._closed or self._waiters:
            return None
        slot = self._free_slot(hint)
        if slot is None:
            return None
        lease = self._lease(slot, request_id)
        # With nobody waiting, a lease can only change the decision by raising the target above the
        # live runners (the buffer, or demand beyond them): apply the policy only then.
        if self._target_exceeds_live():
            self._reconcile()
        return lease

    async def acquire(self, request_id: str, *, start_timeout: float | None = None, hint: str | None = None) -> Lease:
        self._check_open()
        timeout = start_timeout if start_timeout is not None else self.app.scaling.request_start_timeout
        if timeout is not None and timeout <= 0:
            timeout = None
        lease = self.try_acquire(request_id, hint)
        if lease is not None:
            return lease
        self._raise_if_backing_off()
        loop = asyncio.get_running_loop()
        waiter = Waiter(request_id, self.clock.now(), loop.create_future())
        self._waiters.append(waiter)
        self._reconcile()
        try:
            async with asyncio.timeout(timeout):
                return await asyncio.shield(waiter.future)
        except BaseException as exc:
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)
            fut = waiter.future
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                lease = fut.result()
                if isinstance(exc, TimeoutError):
                    return lease  # granted in the same instant the timeout fired: use it
                if self._give_back(lease, served=False):
                    self._reconcile()
            elif not fut.done():
                fut.cancel()
            if isinstance(exc, TimeoutError):
                raise RequestStartTimeout(
                    f"no runner of {self.app.alias} could take request {request_id} within {timeout:g} s"
                ) from None
            raise

    async def release(self, lease: Lease, outcome: Outcome = "ok") -> None:
        if self._return(lease, outcome):
            self._reconcile()

    def release_nowait(self, lease: Lease, outcome: Outcome = "ok") -> None:
        """:meth:`release` without waiting for the policy. A release other than "ok" (a runner to
        replace) applies it at once. After an "ok" one it runs at the end of this event-loop step, or,
        when it already ran in the last :data:`RELEASE_EVALUATION_INTERVAL`, once that much time has
        passed: the releases of a busy stretch share one evaluation."""
        if not self._return(lease, outcome):
            return
        if outcome != "ok":
            self._reconcile()
            return
        if self._reconcile_handle is not None:
            return
        # asyncio.get_running_loop() costs a getpid() system call; the hot path uses the loop start() ran on
        loop = self._event_loop or asyncio.get_running_loop()
        wait = self._reconciled_at + RELEASE_EVALUATION_INTERVAL - self.clock.now()
        if wait <= 0:
            self._reconcile_handle = loop.call_soon(self._deferred_reconcile)
        else:
            self._reconcile_handle = loop.call_later(wait, self._deferred_reconcile)

    def _return(self, lease: Lease, outcome: Outcome) -> bool:
        slot = self._slots.get(lease.runner.id)
        if slot is None:
            return False
        if outcome == "replace" and slot.state in LIVE_STATES:
            self.stats.replaced += 1
            slot.stop_reason = "replaced"
            self._set_state(slot, S.DRAINING)
        return self._give_back(lease, served=True)

    def _deferred_reconcile(self) -> None:
        self._reconcile_handle = None
        self._reconcile()

    def set_hints(self, runner_id: str, hints: Sequence[str]) -> None:
        slot = self._slots.get(runner_id)
        if slot is not None:
            slot.hints = frozenset(hints)

    def runners(self) -> list[RunnerInfo]:
        with self._lock:
            slots = list(self._slots.values())
        return [
            RunnerInfo(
                id=s.id,
                app=self.name,
                state=str(s.state),
                url=s.runner.url if s.runner is not None else None,
                in_flight=s.in_flight,
                served=s.served,
                started_at=s.started_at,
                last_request_at=s.last_request_at,
                revision=s.revision,
            )
            for s in slots
        ]

    # -- control ------------------------------------------------------------------------------------

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def backoff(self) -> dict[str, object] | None:
        """The FAILURE_DELAY after failed starts: failures so far, seconds until the next start, last error."""
        if self._failures <= 0 or self._last_error is None:
            return None
        return {
            "failures": self._failures,
            "retry_in": round(self._backoff_remaining(), 1),
            "error_type": self._last_error.error_type,
            "message": self._last_error.message,
        }

    def reset_backoff(self) -> None:
        """Forget the failed starts so far (a fault that caused them was cleared)."""
        self._failures = 0
        self._last_failure_at = None
        self._last_error = None
        self._reconcile()

    async def tick(self) -> None:
        """Apply the policy now (the periodic tick does this on its own)."""
        self._reconcile()

    async def settle(self, timeout: float | None = None) -> None:
        """Wait until no start or stop is in progress (TimeoutError after ``timeout``; nothing is cancelled)."""
        await wait_for_tasks(self._tasks, timeout)

    async def expire_idle(self) -> None:
        """Time warp: stop now the idle runners the policy would stop once keep_alive ran out.

        Runners needed for ``min_concurrency``, the buffer or current demand stay. Returns once they
        are stopped.
        """
        warp = max(self.app.scaling.keep_alive, NEVER_SERVED_REAP_SECONDS) + 1.0
        decision = self._decide(self.clock.now() + warp)
        for order in decision.stop:
            slot = self._slots.get(order.runner)
            if slot is not None:
                self._stop(slot, str(order.reason), target=decision.target)
        await self.settle()

    async def close(self, wait_starts: float = 5.0) -> None:
        """Fail waiting requests, stop every runner and the tick. Runners still starting get
        ``wait_starts`` seconds to finish (then are stopped); the runtime's own close() kills the rest."""
        if self._closed:
            return
        self._closed = True
        self.drop_head_starts()
        if self._reconcile_handle is not None:
            self._reconcile_handle.cancel()
            self._reconcile_handle = None
        error = RunnerError(f"{self.app.alias} is shutting down", error_type="runner_disconnected")
        self._fail_waiters(error)
        for task in (self._loop_task, self._health_task):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for slot in list(self._slots.values()):
            if slot.runner is not None:
                self._stop(slot, "shutdown")
        grace = float(self.app.scaling.termination_grace_period_seconds)
        with contextlib.suppress(TimeoutError):
            await wait_for_tasks(self._stop_tasks, grace + 30.0)
        with contextlib.suppress(TimeoutError):
            await wait_for_tasks(self._tasks, wait_starts)

    # -- revisions (driven by falemu.devloop.rollout) ---------------------------------------------------

    def launch_revision(self, spec: RunnerSpec, revision: int, count: int) -> list[str]:
        """Start ``count`` runners of ``revision`` from ``spec`` beside the serving ones; their ids.

        They take no request and the policy does not count them until :meth:`switch_to` makes their
        revision the serving one. A failed start is theirs alone: the app's back-off is not touched.
        """
        self._check_open()
        return [self._launch(cold=False, spec=spec, revision=revision).id for _ in range(count)]

    def start_state(self, runner_ids: Sequence[str]) -> tuple[int, list[RunnerError], int]:
        """Of these runners (from :meth:`launch_revision`): how many are ready, the errors of those whose
        start failed, and how many are gone otherwise (stopped before they were ready)."""
        ready, errors, gone = 0, [], 0
        for rid in runner_ids:
            slot = self._slots.get(rid)
            error = self._start_errors.get(rid)
            if error is not None:
                errors.append(error)
            elif slot is None:
                gone += 1
            elif slot.state in SERVING_STATES:
                ready += 1
        return ready, errors, gone

    def forget_starts(self, runner_ids: Sequence[str]) -> None:
        """Drop what :meth:`start_state` keeps about these runners' failed starts."""
        for rid in runner_ids:
            self._start_errors.pop(rid, None)

    def runners_of(self, revision: int | None = None, *, other_than: int | None = None) -> list[str]:
        """Ids of the runners (in any state) of ``revision``, or of every revision but ``other_than``."""
        return [
            s.id
            for s in self._slots.values()
            if (revision is None or s.revision == revision) and (other_than is None or s.revision != other_than)
        ]

    @property
    def live(self) -> int:
        """Live runners (PENDING, SETUP, IDLE, RUNNING) of the serving revision."""
        return self._live_count()

    def warm(self, count: int) -> None:
        """Start runners of the serving revision until ``count`` are live (within max_concurrency)."""
        self._check_open()
        for _ in range(min(count, max(0, self.app.scaling.max_concurrency)) - self._live_count()):
            self._launch(cold=False)

    def hold_starts(self, hold: bool) -> None:
        """Keep the policy from starting runners (a recreate rollout, while the old runners go)."""
        self._hold_starts = hold
        if not hold:
            self._reconcile()

    def retire(self, runner_ids: Sequence[str], reason: str) -> None:
        """Stop these runners: idle ones now, busy ones once their requests are done (DRAINING),
        starting ones as soon as their start returns."""
        for rid in runner_ids:
            slot = self._slots.get(rid)
            if slot is None or slot.state in (S.DRAINING, S.TERMINATING, S.TERMINATED):
                continue
            if slot.in_flight > 0:
                slot.stop_reason = reason
                self._set_state(slot, S.DRAINING)
            else:
                self._stop(slot, reason)

    def switch_to(self, revision: int, spec: RunnerSpec, app: AppConfig | None = None) -> None:
        """Make ``revision`` the serving one (fal's alias switch): requests and the policy see only its
        runners from now on, new runners start from ``spec``, and the other revisions' runners retire."""
        self.revision = revision
        self._spec = spec
        if app is not None:
            self.app = app
        self._failures = 0
        self._last_failure_at = None
        self._last_error = None
        self._hold_starts = False
        self.retire(self.runners_of(other_than=revision), "rollout")
        self._dispatch()
        self._reconcile()

    async def wait_for(self, done: Callable[[], bool], timeout: float | None = None) -> None:
        """Wait until ``done()`` is true, checking after each runner state change (TimeoutError after ``timeout``)."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while not done():
            if self._changed is None:
                self._changed = asyncio.Event()
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                raise TimeoutError
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=min(remaining or 1.0, 1.0))

    # -- internals ----------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise RunnerError(f"{self.app.alias} is shutting down", error_type="runner_disconnected")

    def _live_count(self) -> int:
        revision = self.revision
        return sum(1 for s in self._slots.values() if s.state in LIVE_STATES and s.revision == revision)

    def _free_slot(self, hint: str | None = None) -> Slot | None:
        """The serving runner with the fewest requests in flight (the oldest on a tie), if one has room;
        among them, one that reported ``hint`` first."""
        cap = max(1, self.app.scaling.max_multiplexing)
        revision = self.revision
        best: Slot | None = None
        hinted: Slot | None = None
        for s in self._slots.values():
            if s.in_flight >= cap or s.state not in SERVING_STATES or s.revision != revision:
                continue
            key = (s.in_flight, s.started_at)
            if best is None or key < (best.in_flight, best.started_at):
                best = s
            if hint is not None and hint in s.hints and (hinted is None or key < (hinted.in_flight, hinted.started_at)):
                hinted = s
        return hinted or best

    def _lease(self, slot: Slot, request_id: str) -> Lease:
        assert slot.runner is not None
        slot.in_flight += 1
        if slot.state is not S.RUNNING:
            self._set_state(slot, S.RUNNING)
        if self.faults is not None:
            self.faults.on_lease(self, slot.id, request_id)
        return Lease(runner=slot.runner, request_id=request_id, started=self.clock.now())

    def _give_back(self, lease: Lease, *, served: bool) -> bool:
        """Return the lease's capacity and hand it to a waiter; True when the policy must run again."""
        slot = self._slots.get(lease.runner.id)
        if slot is None:
            return False
        slot.in_flight = max(0, slot.in_flight - 1)
        if served:
            slot.served += 1
            self.stats.served += 1
            slot.last_request_at = self.clock.now()
        if slot.state is S.DRAINING:
            if slot.in_flight == 0:
                self._stop(slot, slot.stop_reason or "drained")
        elif slot.state in SERVING_STATES and slot.in_flight == 0:
            self._set_state(slot, S.IDLE)
        self._dispatch()
        return True

    def _target_exceeds_live(self) -> bool:
        scaling = self.app.scaling
        if scaling.concurrency_buffer <= 0 and scaling.concurrency_buffer_perc <= 0:
            # The target is the live runners' requests' need, which they carry (leases only go to a
            # runner with room), or min_concurrency.
            floor = min(scaling.min_concurrency, scaling.max_concurrency)
            return floor > 0 and floor > self._live_count()
        live = in_flight = 0
        for slot in self._slots.values():
            if slot.state in LIVE_STATES and slot.revision == self.revision:
                live += 1
                in_flight += slot.in_flight
        return target_runners(self.app.scaling, in_flight) > live

    def _dispatch(self) -> None:
        while self._waiters:
            slot = self._free_slot()
            if slot is None:
                return
            waiter = self._waiters.popleft()
            if waiter.future.done():
                continue
            waiter.future.set_result(self._lease(slot, waiter.request_id))

    def _backoff_remaining(self) -> float:
        if self._failures <= 0 or self._last_failure_at is None:
            return 0.0
        return max(0.0, self._last_failure_at + backoff_seconds(self._failures) - self.clock.now())

    def _raise_if_backing_off(self) -> None:
        error = self._last_error
        if error is None or self._live_count() > 0:
            return
        remaining = self._backoff_remaining()
        if remaining <= 0:
            return
        raise RunnerError(
            error.message,
            hint=f"falemu starts it again in {remaining:.0f} s (back-off after {self._failures} failed starts)"
            + (f"; {error.hint}" if error.hint else ""),
            error_type=error.error_type,
            logs=error.logs,
        )

    def _decide(self, now: float) -> Decision:
        return decide(
            self.app.scaling,
            [self._view(s) for s in self._slots.values() if s.revision == self.revision],
            # Waiters are FIFO with non-decreasing enqueue times, and demand beyond
            # max_concurrency * max_multiplexing cannot raise the target: the head of the queue is enough.
            [w.view for w in itertools.islice(self._waiters, self._demand_cap())],
            now,
            failures=self._failures,
            last_failure_at=self._last_failure_at,
        )

    def _demand_cap(self) -> int:
        scaling = self.app.scaling
        return max(1, scaling.max_concurrency) * max(1, scaling.max_multiplexing) + 1

    @staticmethod
    def _view(slot: Slot) -> RunnerView:
        return RunnerView(
            id=slot.id,
            state=slot.state,
            in_flight=slot.in_flight,
            started_at=slot.started_at,
            ready_at=slot.ready_at,
            last_request_at=slot.last_request_at,
            ever_served=slot.served > 0,
        )

    def _reconcile(self) -> None:
        if self._closed:
            return
        self._reconciled_at = self.clock.now()
        decision = self._decide(self.clock.now())
        self._next_change = decision.next_change
        for order in decision.stop:
            slot = self._slots.get(order.runner)
            if slot is not None:
                self._stop(slot, str(order.reason), target=decision.target)
        if decision.start > 0 and not self._hold_starts:
            cold = bool(self._waiters)
            for _ in range(decision.start):
                self._launch(cold=cold)
            self.events(ScaledUp(self.name, runners=self._live_count(), target=decision.target))

    def _new_id(self) -> str:
        while True:
            rid = new_runner_id(self.app.alias)
            if rid not in self._slots:
                return rid

    def _initial(self, warm: int) -> int:
        """How many runners :meth:`start` starts: ``max(min_concurrency, warm)``, within max_concurrency."""
        return min(max(self.app.scaling.min_concurrency, warm), max(0, self.app.scaling.max_concurrency))

    def _launch(self, *, cold: bool, spec: RunnerSpec | None = None, revision: int | None = None) -> Slot:
        slot = self._new_slot(cold=cold, revision=self.revision if revision is None else revision)
        self._spawn(self._run_start(slot, spec or self._spec), f"start-{slot.id}")
        return slot

    def _new_slot(self, *, cold: bool, revision: int, rid: str | None = None) -> Slot:
        slot = Slot(
            id=rid or self._new_id(), state=S.PENDING, started_at=self.clock.now(), cold=cold, revision=revision
        )
        with self._lock:
            self._slots[slot.id] = slot
        self.stats.starts += 1
        if cold:
            self.stats.cold_starts += 1
        self.stats.peak_runners = max(self.stats.peak_runners, self._live_count())
        self._emit_state(slot)
        return slot

    def _runner_spec(self, slot: Slot, template: RunnerSpec) -> RunnerSpec:
        """``template`` for the runner of ``slot``: its id, and its log lines as the app's events."""
        app = self.name

        def on_log(line: str) -> None:
            self.events(RunnerLog(app, runner=slot.id, line=line))

        return replace(template, runner_id=slot.id, on_log=on_log)

    def _spawn(self, coro: collections.abc.Coroutine[object, object, None], name: str) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro, name=f"falemu-{name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _run_start(
        self, slot: Slot, template: RunnerSpec, begun: concurrent.futures.Future[Runner] | None = None
    ) -> None:
        """Start the runner of ``slot`` (or wait for the start :meth:`head_start` ``begun``) and serve it."""
        if begun is None:
            spec = self._runner_spec(slot, template)
            self._set_state(slot, S.SETUP)
            if self.faults is not None:
                try:
                    fault = self.faults.on_start(self.name, slot.id)
                except Exception as exc:  # a broken fault must not leave the runner in SETUP for good
                    self.events(Notice(self.name, level="warning", message=f"a fault's start hook failed: {exc!r}"))
                    fault = None
                if fault is not None:
                    spec, error = await self._faulty_start(spec, fault)
                    if error is not None:
                        self._start_failed(slot, error)
                        return
        try:
            if begun is not None:
                runner = await asyncio.wrap_future(begun)
            else:
                runner = await asyncio.to_thread(self.runtime.start, spec, self._runtime_events)
        except Exception as exc:
            self._start_failed(slot, as_runner_error(exc))
            return
        self._started(slot, runner)

    def _started(self, slot: Slot, runner: Runner) -> None:
        """``runner`` of ``slot`` is ready: serve it (or stop it, when it was stopped meanwhile)."""
        app = self.name
        slot.runner = runner
        if self._closed or slot.stop_reason:
            self._stop(slot, slot.stop_reason or "shutdown", force=True)
            return
        slot.ready_at = self.clock.now()
        serving = slot.revision == self.revision
        if serving:
            self._failures = 0
            self._last_failure_at = None
            self._last_error = None
        self._set_state(slot, S.IDLE)
        self.events(
            RunnerReady(
                app,
                runner=slot.id,
                address=runner.url,
                timeline=dict(runner.timeline),
                cold_start=slot.cold,
                revision=slot.revision,
                early=runner.early,
            )
        )
        if serving:
            self._dispatch()
            self._reconcile()

    async def _faulty_start(self, spec: RunnerSpec, fault: StartFault) -> tuple[RunnerSpec, RunnerError | None]:
        """Apply an injected start fault: the spec to start from, or the error the start fails with."""
        if fault.data_mode is not None:
            spec = replace(spec, data_mode=fault.data_mode)
        if fault.delay > 0:
            limit = float(spec.startup_timeout or self.app.scaling.startup_timeout)
            if fault.delay >= limit:
                await asyncio.sleep(limit)
                return spec, StartupTimeout(
                    f"runner {spec.runner_id} of {self.name} was not ready within startup_timeout ({limit:g} s)",
                    hint="its start was slowed down by an injected fault (falemu chaos)",
                )
            await asyncio.sleep(fault.delay)
            spec = replace(spec, startup_timeout=limit - fault.delay)
        return spec, fault.error

    def kill(self, runner_id: str, reason: str = "killed") -> bool:
        """Kill a runner now (SIGKILL, no grace), as a crash would: its requests in flight break, and it
        takes no new one. False when there is no such live runner."""
        slot = self._slots.get(runner_id)
        if slot is None or slot.runner is None or slot.state in (S.TERMINATING, S.TERMINATED):
            return False
        self.events(RunnerFailed(self.name, runner=slot.id, error_type="runner_disconnected", message=reason))
        if slot.in_flight > 0:
            # Dead now; the controller lets it go once its broken requests are given back.
            slot.stop_reason = "killed"
            self._set_state(slot, S.DRAINING)
            self._spawn(self._kill_now(slot.runner), f"kill-{slot.id}")
        else:
            self._stop(slot, "killed", grace=0.0)
        return True

    async def _kill_now(self, runner: Runner) -> None:
        try:
            await asyncio.to_thread(self.runtime.stop, runner, 0.0)
        except Exception as exc:
            self.events(Notice(self.name, level="warning", message=f"killing {runner.id} failed: {exc}"))

    def _start_failed(self, slot: Slot, error: RunnerError) -> None:
        slot.error = error
        self.stats.failed_starts += 1
        serving = slot.revision == self.revision
        if serving:
            # A runner of a revision being rolled out counts against that rollout, not the app's back-off.
            self._failures += 1
            self._last_failure_at = self.clock.now()
            self._last_error = error
        self._set_state(slot, S.FAILURE_DELAY)
        self.events(
            RunnerFailed(self.name, runner=slot.id, error_type=error.error_type, message=error.message, logs=error.logs)
        )
        with self._lock:
            self._slots.pop(slot.id, None)
        self._pulse()
        if not serving:
            self._start_errors[slot.id] = error
            return
        if self._live_count() == 0:
            self._fail_waiters(error)
        self._reconcile()

    def _fail_waiters(self, error: BaseException) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.future.done():
                waiter.future.set_exception(error)

    def _stop(
        self, slot: Slot, reason: str, *, target: int | None = None, force: bool = False, grace: float | None = None
    ) -> None:
        if slot.state in (S.TERMINATING, S.TERMINATED) and not force:
            return
        if slot.state in (S.PENDING, S.SETUP) and not force:
            slot.stop_reason = reason  # stopped as soon as its start returns
            return
        was_live = slot.state in LIVE_STATES and slot.revision == self.revision
        slot.stop_reason = reason
        self._set_state(slot, S.TERMINATING)
        self.stats.stops += 1
        if was_live and not self._closed:
            self.events(
                ScaledDown(
                    self.name,
                    runners=self._live_count(),
                    target=target if target is not None else self._decide(self.clock.now()).target,
                    reason=reason,
                )
            )
        task = self._spawn(self._run_stop(slot, reason, grace), f"stop-{slot.id}")
        self._stop_tasks.add(task)
        task.add_done_callback(self._stop_tasks.discard)

    async def _run_stop(self, slot: Slot, reason: str, grace: float | None = None) -> None:
        if slot.runner is not None:
            if grace is None:
                grace = float(self.app.scaling.termination_grace_period_seconds)
            try:
                await asyncio.to_thread(self.runtime.stop, slot.runner, grace)
            except Exception as exc:
                self.events(Notice(self.name, level="warning", message=f"stopping {slot.id} failed: {exc}"))
        self._set_state(slot, S.TERMINATED)
        with self._lock:
            self._slots.pop(slot.id, None)
        self._pulse()
        self.events(RunnerStopped(self.name, runner=slot.id, reason=reason))
        self._dispatch()
        self._reconcile()

    def _runtime_events(self, event: Event) -> None:
        """The runtime's own events, minus those the controller emits itself with more to say."""
        if not isinstance(event, RunnerReady | RunnerFailed | RunnerLog):
            self.events(event)

    def _set_state(self, slot: Slot, state: RunnerState) -> None:
        if slot.state is state and state is not S.PENDING:
            return
        slot.state = state
        if self._changed is not None:
            self._pulse()
        self._emit_state(slot)

    def _pulse(self) -> None:
        changed, self._changed = self._changed, None
        if changed is not None:
            changed.set()

    def _emit_state(self, slot: Slot) -> None:
        self.events(RunnerStateChanged(self.name, runner=slot.id, state=str(slot.state)))

    async def _run_loop(self) -> None:
        while not self._closed:
            # Wake at the next keep_alive deadline (or scaling_delay, back-off end) when it comes before
            # the next regular tick, so runners stop on time rather than up to a tick late.
            delay = self._tick_seconds
            if self._next_change is not None:
                delay = min(delay, max(0.002, self._next_change - self.clock.now()))
            await asyncio.sleep(delay)
            try:
                self._reconcile()
                if time.monotonic() - self._last_health >= self._health_interval and (
                    self._health_task is None or self._health_task.done()
                ):
                    self._last_health = time.monotonic()
                    self._health_task = asyncio.create_task(self._check_health())
            except Exception as exc:  # the tick must survive anything one round throws
                self.events(Notice(self.name, level="warning", message=f"scaling tick failed: {exc}"))

    async def _check_health(self) -> None:
        """Notice idle runners that died on their own (a crashed or OOM-killed container)."""
        for slot in [s for s in self._slots.values() if s.state is S.IDLE and s.runner is not None]:
            assert slot.runner is not None
            try:
                alive = await asyncio.to_thread(self.runtime.is_alive, slot.runner)
            except Exception:
                continue
            if alive or slot.state is not S.IDLE or self._closed:
                continue
            self.events(
                RunnerFailed(self.name, runner=slot.id, error_type="runner_disconnected", message="the runner exited")
            )
            self._stop(slot, "exited")
