"""AppController on the FakeRuntime (real HTTP runners in-process) with a fake clock."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from falemu.clock import FakeClock, MonotonicClock
from falemu.config.model import AppConfig, AppShape, ScalingConfig
from falemu.errors import RunnerError
from falemu.events import (
    Event,
    EventBus,
    RunnerFailed,
    RunnerReady,
    RunnerStateChanged,
    RunnerStopped,
    ScaledDown,
    ScaledUp,
)
from falemu.runtime.base import PreparedApp, RunnerSpec
from falemu.runtime.fake import FakeRuntime
from falemu.scaling.controller import RELEASE_EVALUATION_INTERVAL, AppController
from falemu.scaling.pool import Lease, RequestStartTimeout, RunnerPool

T = TypeVar("T")


def make_app(**scaling: Any) -> AppConfig:
    return AppConfig(
        name="greeter",
        alias="greeter",
        shape=AppShape.DIRECT_SERVER,
        project_root=Path("/nonexistent"),
        exposed_port=8000,
        scaling=ScalingConfig(**scaling),
    )


class Harness:
    def __init__(self, runtime: FakeRuntime, ctl: AppController, clock: FakeClock, bus: EventBus) -> None:
        self.runtime = runtime
        self.ctl = ctl
        self.clock = clock
        self.bus = bus

    def events(self, kind: type[Event]) -> list[Any]:
        return [e for e in self.bus.history if isinstance(e, kind)]

    def states(self, runner: str) -> list[str]:
        return [e.state for e in self.events(RunnerStateChanged) if e.runner == runner]

    async def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        await self.ctl.tick()
        await self.ctl.settle()


def run(
    body: Callable[[Harness], Awaitable[T]],
    *,
    runtime: FakeRuntime | None = None,
    warm: int = 0,
    clock: FakeClock | None = None,
    **scaling: Any,
) -> T:
    async def main() -> T:
        rt = runtime or FakeRuntime()
        fc = clock or FakeClock()
        bus = EventBus()
        app = make_app(**scaling)
        spec = RunnerSpec(
            prepared=PreparedApp(app=app, image=None, built=False), runner_id="", owner="local", data_dir=Path("/tmp")
        )
        ctl = AppController(app, rt, spec, clock=fc, events=bus, tick=0.05, health_interval=0.05)
        h = Harness(rt, ctl, fc, bus)
        try:
            await ctl.start(warm=warm)
            return await body(h)
        finally:
            await ctl.close()
            rt.close()
            assert rt.running() == []

    return asyncio.run(main())


def test_controller_is_a_runner_pool() -> None:
    def check(pool: RunnerPool) -> None:
        assert pool.app.name == "greeter"

    async def body(h: Harness) -> None:
        check(h.ctl)

    run(body)


def test_first_request_cold_starts_a_runner_that_really_serves() -> None:
    async def body(h: Harness) -> None:
        assert h.ctl.runners() == []
        lease = await h.ctl.acquire("req-1")
        async with httpx.AsyncClient() as client:
            answer = (await client.post(f"{lease.runner.url}/greet", json={"name": "x"})).json()
        assert answer["runner"] == lease.runner.id
        await h.ctl.release(lease)
        ready = h.events(RunnerReady)
        assert [e.runner for e in ready] == [lease.runner.id]
        assert ready[0].cold_start is True
        assert h.ctl.stats.cold_starts == 1
        assert h.states(lease.runner.id) == ["PENDING", "SETUP", "IDLE", "RUNNING", "IDLE"]
        (info,) = h.ctl.runners()
        assert (info.state, info.served, info.in_flight) == ("IDLE", 1, 0)

    run(body)


def test_warm_start_is_not_a_cold_start() -> None:
    async def body(h: Harness) -> None:
        assert len(h.ctl.runners()) == 1
        assert h.ctl.stats.cold_starts == 0
        assert h.events(RunnerReady)[0].cold_start is False

    run(body, warm=1)


def test_min_concurrency_runners_start_with_the_pool_and_stay() -> None:
    async def body(h: Harness) -> None:
        assert [r.state for r in h.ctl.runners()] == ["IDLE", "IDLE"]
        await h.advance(3600)
        assert len(h.ctl.runners()) == 2

    run(body, min_concurrency=2, max_concurrency=3, keep_alive=5)


def test_max_multiplexing_shares_one_runner() -> None:
    async def body(h: Harness) -> None:
        leases = [await h.ctl.acquire(f"r{i}") for i in range(3)]
        assert len({lease.runner.id for lease in leases}) == 1
        assert h.ctl.runners()[0].in_flight == 3
        fourth = await h.ctl.acquire("r3")
        assert fourth.runner.id != leases[0].runner.id  # the first runner is full: a second one starts
        for lease in [*leases, fourth]:
            await h.ctl.release(lease)

    run(body, max_multiplexing=3, max_concurrency=4)


def test_max_concurrency_caps_runners_and_waiters_are_fifo() -> None:
    async def body(h: Harness) -> None:
        first = await h.ctl.acquire("a")
        second = await h.ctl.acquire("b")
        order: list[str] = []

        async def wait(rid: str) -> Lease:
            lease = await h.ctl.acquire(rid)
            order.append(rid)
            return lease

        waiting = [asyncio.create_task(wait(rid)) for rid in ("c", "d", "e")]
        await asyncio.sleep(0.2)
        await h.ctl.settle()
        assert len(h.ctl.runners()) == 2
        assert h.ctl.waiting == 3
        await h.ctl.release(first)
        c = await waiting[0]
        await h.ctl.release(second)
        d = await waiting[1]
        await h.ctl.release(c)
        e = await waiting[2]
        assert order == ["c", "d", "e"]
        await h.ctl.release(d)
        await h.ctl.release(e)
        assert h.ctl.stats.peak_runners == 2

    run(body, max_concurrency=2)


def test_start_timeout_raises_request_start_timeout_and_forgets_the_waiter() -> None:
    async def body(h: Harness) -> None:
        with pytest.raises(RequestStartTimeout):
            await h.ctl.acquire("slow", start_timeout=0.1)
        assert h.ctl.waiting == 0
        lease = await h.ctl.acquire("patient")  # the started runner still comes up and serves
        await h.ctl.release(lease)

    run(body, runtime=FakeRuntime(start_delay=0.5))


def test_request_start_timeout_of_the_app_applies_by_default() -> None:
    async def body(h: Harness) -> None:
        with pytest.raises(RequestStartTimeout):
            await h.ctl.acquire("slow")

    # A whole second is the smallest value fal's config allows; the start takes longer.
    run(body, runtime=FakeRuntime(start_delay=1.5), request_start_timeout=1)


def test_keep_alive_stops_the_runner_at_keep_alive_and_not_before() -> None:
    async def body(h: Harness) -> None:
        lease = await h.ctl.acquire("a")
        await h.ctl.release(lease)
        await h.advance(29.9)
        assert [r.id for r in h.ctl.runners()] == [lease.runner.id]
        assert h.runtime.running() == [lease.runner.id]
        await h.advance(0.1)
        assert h.ctl.runners() == []
        assert h.runtime.stopped == [lease.runner.id]
        (stopped,) = h.events(RunnerStopped)
        assert stopped.reason == "keep_alive"
        assert h.states(lease.runner.id)[-2:] == ["TERMINATING", "TERMINATED"]
        assert h.events(ScaledDown)[0].reason == "keep_alive"

    run(body, keep_alive=30)


def test_cold_start_again_after_keep_alive_expiry() -> None:
    async def body(h: Harness) -> None:
        first = await h.ctl.acquire("a")
        await h.ctl.release(first)
        await h.advance(10)
        assert h.ctl.runners() == []
        second = await h.ctl.acquire("b")
        assert second.runner.id != first.runner.id
        await h.ctl.release(second)
        assert h.ctl.stats.cold_starts == 2

    run(body, keep_alive=10)


def test_never_served_runner_is_reaped_after_ten_seconds() -> None:
    async def body(h: Harness) -> None:
        assert len(h.ctl.runners()) == 1
        await h.advance(9.5)
        assert len(h.ctl.runners()) == 1
        await h.advance(0.5)
        assert h.ctl.runners() == []
        assert h.events(RunnerStopped)[0].reason == "never_served"

    run(body, warm=1, keep_alive=300)


def test_scaling_delay_holds_the_start_back() -> None:
    async def body(h: Harness) -> None:
        task = asyncio.create_task(h.ctl.acquire("a"))
        await asyncio.sleep(0.2)  # several ticks of the controller
        assert h.ctl.runners() == []
        await h.advance(5)
        lease = await task
        await h.ctl.release(lease)

    run(body, scaling_delay=5)


def test_concurrency_buffer_keeps_an_extra_warm_runner() -> None:
    async def body(h: Harness) -> None:
        await h.ctl.tick()
        await h.ctl.settle()
        assert len(h.ctl.runners()) == 1  # buffer at rest
        lease = await h.ctl.acquire("a")
        await h.ctl.settle()
        assert len(h.ctl.runners()) == 2  # demand 1 + buffer 1
        await h.ctl.release(lease)

    run(body, concurrency_buffer=1, max_concurrency=5)


def test_replace_stops_the_runner_and_the_next_request_gets_a_new_one() -> None:
    async def body(h: Harness) -> None:
        lease = await h.ctl.acquire("a")
        await h.ctl.release(lease, "replace")
        await h.ctl.settle()
        assert h.runtime.stopped == [lease.runner.id]
        assert "DRAINING" in h.states(lease.runner.id)
        assert h.events(RunnerStopped)[0].reason == "replaced"
        again = await h.ctl.acquire("b")
        assert again.runner.id != lease.runner.id
        await h.ctl.release(again)
        assert h.ctl.stats.replaced == 1

    run(body, keep_alive=300)


def test_replace_waits_for_other_in_flight_requests() -> None:
    async def body(h: Harness) -> None:
        a = await h.ctl.acquire("a")
        b = await h.ctl.acquire("b")
        assert a.runner.id == b.runner.id
        await h.ctl.release(a, "replace")
        await h.ctl.settle()
        assert h.runtime.stopped == []
        assert h.ctl.runners()[0].state == "DRAINING"
        await h.ctl.release(b)
        await h.ctl.settle()
        assert h.runtime.stopped == [a.runner.id]

    run(body, max_multiplexing=2, keep_alive=300)


def test_failed_start_fails_the_waiting_request_and_backs_off() -> None:
    async def body(h: Harness) -> None:
        with pytest.raises(RunnerError, match="exited during start-up"):
            await h.ctl.acquire("a")
        assert [e.state for e in h.events(RunnerStateChanged)][-1] == "FAILURE_DELAY"
        # During the back-off a request fails at once, saying when the next start happens.
        with pytest.raises(RunnerError) as info:
            await h.ctl.acquire("b")
        assert "30 s" in (info.value.hint or "")
        assert len(h.runtime.started) == 0
        backoff = h.ctl.backoff()
        assert backoff is not None
        assert (backoff["failures"], backoff["retry_in"]) == (1, 30.0)
        await h.advance(30)
        lease = await h.ctl.acquire("c")
        await h.ctl.release(lease)
        assert h.ctl.stats.failed_starts == 1
        assert h.ctl.backoff() is None

    run(body, runtime=FakeRuntime(fail_starts=1))


def test_back_off_grows_with_each_failure_and_resets_on_success() -> None:
    async def body(h: Harness) -> None:
        with pytest.raises(RunnerError):
            await h.ctl.acquire("a")
        await h.advance(30)
        with pytest.raises(RunnerError):
            await h.ctl.acquire("b")
        with pytest.raises(RunnerError) as info:
            await h.ctl.acquire("c")
        assert "60 s" in (info.value.hint or "")
        await h.advance(59)
        with pytest.raises(RunnerError):
            await h.ctl.acquire("d")
        await h.advance(1)
        lease = await h.ctl.acquire("e")
        await h.ctl.release(lease)
        await h.ctl.release(await h.ctl.acquire("f"))  # success reset the count: no back-off left

    run(body, runtime=FakeRuntime(fail_starts=2), keep_alive=300)


def test_warm_start_failure_raises_from_start() -> None:
    async def main() -> None:
        rt = FakeRuntime(fail_starts=1)
        app = make_app()
        spec = RunnerSpec(
            prepared=PreparedApp(app=app, image=None, built=False), runner_id="", owner="o", data_dir=Path("/tmp")
        )
        ctl = AppController(app, rt, spec, clock=FakeClock())
        try:
            with pytest.raises(RunnerError):
                await ctl.start(warm=1)
        finally:
            await ctl.close()

    asyncio.run(main())


def test_expire_idle_reaps_idle_runners_above_the_minimum_now() -> None:
    async def body(h: Harness) -> None:
        a = await h.ctl.acquire("a")
        b = await h.ctl.acquire("b")
        busy = await h.ctl.acquire("c")
        await h.ctl.release(a)
        await h.ctl.release(b)
        await h.ctl.expire_idle()
        left = h.ctl.runners()
        # One idle runner stays for min_concurrency=2 (the busy one counts too) and is never touched.
        assert len(left) == 2
        assert busy.runner.id in {r.id for r in left}
        assert h.events(RunnerStopped)[0].reason == "keep_alive"
        await h.ctl.release(busy)

    run(body, min_concurrency=2, max_concurrency=3, keep_alive=3600, clock=FakeClock())


def test_close_stops_every_runner_and_fails_waiters() -> None:
    async def body(h: Harness) -> None:
        lease = await h.ctl.acquire("a")
        pending = asyncio.create_task(h.ctl.acquire("b"))
        await asyncio.sleep(0.05)
        await h.ctl.close()
        with pytest.raises(RunnerError):
            await pending
        assert h.runtime.running() == []
        with pytest.raises(RunnerError):
            await h.ctl.acquire("c")
        await h.ctl.release(lease)  # a late release after close is harmless

    run(body, max_concurrency=1)


def test_a_runner_that_dies_on_its_own_is_noticed_and_replaced_for_min_concurrency() -> None:
    async def body(h: Harness) -> None:
        (runner,) = h.ctl.runners()
        h.runtime.kill(runner.id)
        for _ in range(200):
            if [r.state for r in h.ctl.runners() if r.id != runner.id] == ["IDLE"]:
                break
            await asyncio.sleep(0.02)
        (replacement,) = h.ctl.runners()
        assert replacement.id != runner.id
        (failed,) = h.events(RunnerFailed)
        assert (failed.runner, failed.error_type) == (runner.id, "runner_disconnected")

    run(body, min_concurrency=1, clock=FakeClock())


def test_scale_out_under_load_reaches_max_concurrency_and_no_more() -> None:
    async def body(h: Harness) -> None:
        async with httpx.AsyncClient(timeout=10) as client:

            async def request(i: int) -> str:
                lease = await h.ctl.acquire(f"r{i}")
                try:
                    r = await client.post(f"{lease.runner.url}/work?sleep=0.05")
                    runner: str = r.json()["runner"]
                    return runner
                finally:
                    await h.ctl.release(lease)

            served = await asyncio.gather(*(request(i) for i in range(20)))
        assert len(set(served)) == 3
        assert h.ctl.stats.peak_runners == 3
        assert max(e.runners for e in h.events(ScaledUp)) <= 3

    run(body, max_concurrency=3, keep_alive=300, runtime=FakeRuntime(start_delay=0.05))


def test_real_clock_keeps_working() -> None:
    async def main() -> None:
        rt = FakeRuntime()
        app = make_app(keep_alive=0)
        spec = RunnerSpec(
            prepared=PreparedApp(app=app, image=None, built=False), runner_id="", owner="o", data_dir=Path("/tmp")
        )
        ctl = AppController(app, rt, spec, clock=MonotonicClock(), tick=0.02)
        await ctl.start()
        lease = await ctl.acquire("a")
        await ctl.release(lease)
        for _ in range(200):
            if not ctl.runners():
                break
            await asyncio.sleep(0.02)
        assert ctl.runners() == []
        await ctl.close()

    asyncio.run(main())


# -- the gateway's fast path: try_acquire and release_nowait ------------------------------------------------


def test_try_acquire_leases_a_free_runner_and_steps_aside_when_none_is_free_or_someone_waits() -> None:
    async def body(h: Harness) -> None:
        first = h.ctl.try_acquire("r1")
        assert first is not None
        assert h.ctl.try_acquire("r2") is None  # the only runner is full (max_multiplexing=1), max_concurrency=1
        waiter = asyncio.ensure_future(h.ctl.acquire("r3"))
        await asyncio.sleep(0)
        assert h.ctl.waiting == 1
        h.ctl.release_nowait(first)
        third = await asyncio.wait_for(waiter, 5)  # the capacity went to the waiter, in arrival order
        assert third.runner.id == first.runner.id
        assert h.ctl.try_acquire("r4") is None
        await h.ctl.release(third)
        assert h.ctl.try_acquire("r5") is not None

    run(body, warm=1, min_concurrency=1, max_concurrency=1, keep_alive=300)


def test_try_acquire_starts_the_buffer_runner_its_lease_calls_for() -> None:
    async def body(h: Harness) -> None:
        assert len(h.runtime.started) == 1
        lease = h.ctl.try_acquire("r1")
        assert lease is not None
        await h.ctl.settle()
        assert len(h.runtime.started) == 2  # demand 1 + concurrency_buffer 1: a second runner, at once
        h.ctl.release_nowait(lease)

    run(body, warm=1, concurrency_buffer=1, max_concurrency=3, keep_alive=300)


def test_try_acquire_without_a_buffer_starts_nothing() -> None:
    async def body(h: Harness) -> None:
        leases = [h.ctl.try_acquire(f"r{i}") for i in range(3)]
        assert all(lease is not None for lease in leases)
        await h.ctl.settle()
        assert len(h.runtime.started) == 1
        for lease in leases:
            assert lease is not None
            h.ctl.release_nowait(lease)

    run(body, warm=1, max_multiplexing=3, max_concurrency=3, keep_alive=300)


def test_release_nowait_applies_the_policy_in_the_same_loop_step() -> None:
    async def body(h: Harness) -> None:
        h.clock.advance(RELEASE_EVALUATION_INTERVAL)  # no evaluation lately
        lease = h.ctl.try_acquire("r1")
        assert lease is not None
        h.ctl.release_nowait(lease)
        await asyncio.sleep(0)  # one step: the deferred evaluation has run, long before the 50 ms tick
        await asyncio.sleep(0)
        assert [info.state for info in h.ctl.runners()] in (["TERMINATING"], ["TERMINATED"], [])

    run(body, warm=1, keep_alive=0)


def test_release_nowait_evaluations_of_a_busy_stretch_are_spaced() -> None:
    async def body(h: Harness) -> None:
        evaluations = 0
        deferred = h.ctl._deferred_reconcile

        def counting() -> None:
            nonlocal evaluations
            evaluations += 1
            deferred()

        h.ctl._deferred_reconcile = counting  # type: ignore[method-assign]
        h.clock.advance(RELEASE_EVALUATION_INTERVAL)  # the fake clock stands still from here
        for i in range(50):  # 50 requests in a row, each in its own loop step, within one interval
            lease = h.ctl.try_acquire(f"r{i}")
            assert lease is not None
            h.ctl.release_nowait(lease)
            await asyncio.sleep(0)
        # The first release's evaluation, then one per 50 ms of real time these steps take (a few ms
        # here, more on a loaded machine); one per release would be 50.
        assert 1 <= evaluations < 25
        h.clock.advance(RELEASE_EVALUATION_INTERVAL)
        await asyncio.sleep(RELEASE_EVALUATION_INTERVAL * 2)
        assert h.ctl.runners()[0].served == 50

    run(body, warm=1, min_concurrency=1, keep_alive=300)


def test_a_release_that_replaces_its_runner_applies_the_policy_at_once() -> None:
    async def body(h: Harness) -> None:
        lease = h.ctl.try_acquire("r1")
        assert lease is not None
        h.ctl.release_nowait(lease, "replace")  # right after other evaluations: not deferred for that
        states = sorted(info.state for info in h.ctl.runners())
        assert "PENDING" in states  # the replacement was ordered before release_nowait returned

    run(body, warm=1, min_concurrency=1, max_concurrency=1, keep_alive=300)


def test_a_runner_hint_prefers_the_runner_that_reported_it_and_never_waits() -> None:
    async def body(h: Harness) -> None:
        first, second = sorted(h.ctl.runners(), key=lambda info: info.started_at)
        h.ctl.set_hints(second.id, ["flux"])
        plain = h.ctl.try_acquire("r1")
        assert plain is not None
        assert plain.runner.id == first.id  # no hint: the usual pick, the oldest free runner
        h.ctl.release_nowait(plain)
        hinted = h.ctl.try_acquire("r2", hint="flux")
        assert hinted is not None
        assert hinted.runner.id == second.id
        other = await h.ctl.acquire("r3", hint="flux")  # the hinted runner is full: any other, at once
        assert other.runner.id == first.id
        assert h.ctl.try_acquire("r4", hint="flux") is None  # all full: it would wait like any request
        h.ctl.release_nowait(hinted)
        h.ctl.release_nowait(other)
        h.ctl.set_hints("no-such-runner", ["x"])  # a runner already gone: nothing happens

    run(body, warm=2, min_concurrency=2, max_concurrency=2, keep_alive=300)


def _controller(rt: FakeRuntime, bus: EventBus, **scaling: Any) -> AppController:
    app = make_app(**scaling)
    spec = RunnerSpec(
        prepared=PreparedApp(app=app, image=None, built=False), runner_id="", owner="o", data_dir=Path("/tmp")
    )
    return AppController(app, rt, spec, clock=FakeClock(), events=bus)


def _wait(done: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 10
    while not done() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert done()


def test_head_start_begins_runners_before_the_loop_and_start_adopts_them() -> None:
    rt, bus = FakeRuntime(start_delay=0.2), EventBus()
    ctl = _controller(rt, bus, min_concurrency=2, max_concurrency=3)
    assert ctl.head_start(warm=1) == 2  # max(min_concurrency, warm)
    _wait(lambda: len(rt.started) == 2)  # started with no event loop running at all
    (first, second) = rt.started

    async def main() -> None:
        try:
            await ctl.start(warm=1)
            assert sorted(r.id for r in ctl.runners()) == sorted(rt.started)
            assert {r.state for r in ctl.runners()} == {"IDLE"}
            lease = await ctl.acquire("a")  # an adopted runner serves
            async with httpx.AsyncClient() as client:
                answer = await client.get(f"{lease.runner.url}/x")
            assert answer.json()["runner"] == lease.runner.id
            await ctl.release(lease)
        finally:
            await ctl.close()

    asyncio.run(main())
    assert rt.started == [first, second]  # adopted, not started again
    ready = [e.runner for e in bus.history if isinstance(e, RunnerReady)]
    assert sorted(ready) == sorted([first, second])
    states = [e.state for e in bus.history if isinstance(e, RunnerStateChanged) and e.runner == first]
    assert states[:3] == ["PENDING", "SETUP", "IDLE"]
    assert rt.running() == []


def test_a_head_started_runner_that_fails_fails_start_and_counts_toward_the_back_off() -> None:
    rt, bus = FakeRuntime(fail_starts=1), EventBus()
    ctl = _controller(rt, bus)
    assert ctl.head_start(warm=1) == 1

    async def main() -> None:
        try:
            with pytest.raises(RunnerError, match="exited during start-up"):
                await ctl.start(warm=1)
            assert ctl.runners() == []
            assert ctl.backoff() is not None
        finally:
            await ctl.close()

    asyncio.run(main())
    assert [e.logs for e in bus.history if isinstance(e, RunnerFailed)] == ["fake start failure"]


def test_head_started_runners_never_adopted_are_stopped_once_up() -> None:
    rt, bus = FakeRuntime(start_delay=0.3), EventBus()
    ctl = _controller(rt, bus, min_concurrency=1)
    assert ctl.head_start() == 1
    ctl.drop_head_starts()  # e.g. falemu up failed before its event loop ran
    _wait(lambda: len(rt.started) == 1)
    _wait(lambda: rt.running() == [])
    assert rt.stopped == rt.started
    assert ctl.runners() == []
    assert ctl.head_start() == 1  # nothing adopted: still before start()

    async def main() -> None:
        await ctl.close()  # a close without start stops what head_start began, too

    asyncio.run(main())
    _wait(lambda: len(rt.started) == 2 and rt.running() == [])


def test_head_start_after_start_begins_nothing() -> None:
    rt, bus = FakeRuntime(), EventBus()
    ctl = _controller(rt, bus, min_concurrency=1)

    async def main() -> None:
        try:
            await ctl.start()
            assert ctl.head_start(warm=1) == 0
            assert len(ctl.runners()) == 1
        finally:
            await ctl.close()

    asyncio.run(main())
    assert len(rt.started) == 1
