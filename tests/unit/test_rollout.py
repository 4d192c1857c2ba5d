"""Rollouts (falemu.devloop.rollout): the pure decisions, then rolling and recreate through a real
AppController on the FakeRuntime (in-process HTTP runners)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx

from falemu.clock import MonotonicClock
from falemu.config.model import AppConfig, AppShape, ScalingConfig
from falemu.devloop.rollout import (
    INHERITED_SCALE_FIELDS,
    RolloutPlan,
    inherit_scale,
    plan_rollout,
    roll_out,
    start_verdict,
    strategy_of,
)
from falemu.events import Event, EventBus, RolloutFailed, RolloutFinished, RolloutStarted, RunnerReady, RunnerStopped
from falemu.runtime.base import PreparedApp, RunnerSpec
from falemu.runtime.fake import FakeRuntime
from falemu.scaling.controller import AppController

T = TypeVar("T")


def make_app(strategy: str | None = None, **scaling: Any) -> AppConfig:
    return AppConfig(
        name="greeter",
        alias="greeter",
        shape=AppShape.DIRECT_SERVER,
        project_root=Path("/nonexistent"),
        exposed_port=8000,
        deployment_strategy=strategy,
        scaling=ScalingConfig(termination_grace_period_seconds=1, **scaling),
    )


def spec_for(app: AppConfig, image: str) -> RunnerSpec:
    return RunnerSpec(
        prepared=PreparedApp(app=app, image=image, built=True), runner_id="", owner="local", data_dir=Path("/tmp")
    )


# -- pure decisions ---------------------------------------------------------------------------------------


def test_strategy_is_fal_default_rolling() -> None:
    assert strategy_of(make_app()) == "rolling"
    assert strategy_of(make_app("recreate")) == "recreate"
    assert strategy_of(make_app("rolling")) == "rolling"


def test_plan_starts_as_many_runners_as_are_live_within_the_limits() -> None:
    scaling = ScalingConfig(min_concurrency=0, max_concurrency=3)
    assert plan_rollout("rolling", scaling, 0) == RolloutPlan("rolling", 1)  # one, to prove it starts
    assert plan_rollout("rolling", scaling, 2) == RolloutPlan("rolling", 2)
    assert plan_rollout("rolling", scaling, 5).runners == 3  # never above max_concurrency
    assert plan_rollout("recreate", ScalingConfig(min_concurrency=2, max_concurrency=4), 0).runners == 2
    one_at_a_time = plan_rollout("rolling", scaling, 1, side_by_side=False)
    assert (one_at_a_time.strategy, one_at_a_time.runners) == ("recreate", 1)
    assert "process runtime" in one_at_a_time.note


def test_scale_settings_are_inherited_as_fal_deploy_does() -> None:
    running = make_app(keep_alive=300, min_concurrency=1, max_concurrency=5, startup_timeout=100)
    new = make_app(keep_alive=10, min_concurrency=0, max_concurrency=2, startup_timeout=50, max_multiplexing=4)
    kept = inherit_scale(running, new)
    for name in INHERITED_SCALE_FIELDS:
        assert getattr(kept.scaling, name) == getattr(running.scaling, name)
    assert kept.scaling.startup_timeout == 50  # from the new code
    assert kept.scaling.max_multiplexing == 4
    reset = dataclasses.replace(new, reset_scale=True)
    assert inherit_scale(running, reset) is reset


def test_start_verdict() -> None:
    assert start_verdict(2, 1, 0, 0) == "waiting"
    assert start_verdict(2, 2, 0, 0) == "ready"
    assert start_verdict(2, 1, 1, 0) == "failed"
    assert start_verdict(2, 1, 0, 1) == "failed"


# -- through the controller ------------------------------------------------------------------------------


class Rig:
    def __init__(self, runtime: FakeRuntime, ctl: AppController, bus: EventBus, app: AppConfig) -> None:
        self.runtime = runtime
        self.ctl = ctl
        self.bus = bus
        self.app = app

    def events(self, kind: type[Event]) -> list[Any]:
        return [e for e in self.bus.history if isinstance(e, kind)]

    def revisions(self) -> dict[str, int]:
        return {r.id: r.revision for r in self.ctl.runners()}

    async def roll(self, revision: int, *, strategy: str = "rolling", runners: int = 1, **kwargs: Any) -> Any:
        app = dataclasses.replace(self.app, deployment_strategy=strategy)
        plan = RolloutPlan("rolling" if strategy == "rolling" else "recreate", runners)
        return await roll_out(
            self.ctl,
            spec_for(app, f"img:r{revision}"),
            revision,
            plan=plan,
            app=app,
            events=self.bus,
            clock=self.ctl.clock,
            **kwargs,
        )


def run(body: Callable[[Rig], Awaitable[T]], *, runtime: FakeRuntime | None = None, **scaling: Any) -> T:
    async def main() -> T:
        rt = runtime or FakeRuntime()
        bus = EventBus()
        app = make_app(**scaling)
        ctl = AppController(app, rt, spec_for(app, "img:r1"), clock=MonotonicClock(), events=bus, tick=0.05)
        try:
            await ctl.start(warm=1)
            return await body(Rig(rt, ctl, bus, app))
        finally:
            await ctl.close()
            rt.close()
            assert rt.running() == []

    return asyncio.run(main())


async def slow_request(ctl: AppController, request_id: str, seconds: float) -> dict[str, Any]:
    lease = await ctl.acquire(request_id)
    try:
        async with httpx.AsyncClient() as client:
            answer: dict[str, Any] = (await client.post(f"{lease.runner.url}/work?sleep={seconds}")).json()
        return answer
    finally:
        await ctl.release(lease)


def test_rolling_starts_the_new_runner_before_the_old_one_drains() -> None:
    async def body(rig: Rig) -> None:
        (old,) = rig.ctl.runners()
        busy = asyncio.ensure_future(slow_request(rig.ctl, "busy", 0.6))
        await asyncio.sleep(0.1)
        result = await rig.roll(2)
        assert result.ok
        assert result.revision == 2
        assert result.unavailable == 0.0
        assert rig.ctl.revision == 2
        # The old runner is draining its request, not stopped: the request completes on it.
        assert rig.revisions()[old.id] == 1
        assert (await busy)["runner"] == old.id
        await rig.ctl.wait_for(lambda: old.id not in rig.revisions(), timeout=10)
        (new,) = rig.ctl.runners()
        assert new.revision == 2
        lease = rig.ctl.try_acquire("after")
        assert lease is not None
        assert lease.runner.id == new.id
        await rig.ctl.release(lease)
        ready = [e for e in rig.events(RunnerReady) if e.revision == 2]
        stopped = [e for e in rig.events(RunnerStopped) if e.runner == old.id]
        assert ready
        assert stopped
        assert stopped[0].reason == "rollout"
        assert rig.bus.history.index(ready[0]) < rig.bus.history.index(stopped[0])
        (started,) = rig.events(RolloutStarted)
        assert (started.revision, started.previous, started.strategy, started.image) == (2, 1, "rolling", "img:r2")
        (finished,) = rig.events(RolloutFinished)
        assert (finished.revision, finished.previous) == (2, 1)

    run(body)


def test_rolling_keeps_serving_requests_on_the_old_revision_until_the_switch() -> None:
    async def body(rig: Rig) -> None:
        rig.runtime.start_delay = 2.0  # far longer than the request below takes, also on a loaded machine
        (old,) = rig.ctl.runners()
        rollout = asyncio.ensure_future(rig.roll(2))
        await asyncio.sleep(0.1)
        served = await slow_request(rig.ctl, "during", 0.0)
        assert served["runner"] == old.id  # the new runner is not ready: r1 serves
        assert [r.state for r in rig.ctl.runners() if r.revision == 2] == ["SETUP"]
        assert (await rollout).ok

    run(body)


def test_recreate_stops_the_old_runners_first_and_requests_wait_for_the_new_one() -> None:
    async def body(rig: Rig) -> None:
        rig.runtime.start_delay = 0.3
        (old,) = rig.ctl.runners()
        busy = asyncio.ensure_future(slow_request(rig.ctl, "busy", 0.3))
        await asyncio.sleep(0.05)
        rollout = asyncio.ensure_future(rig.roll(2, strategy="recreate"))
        await asyncio.sleep(0.05)
        # The old runner drains, no new one starts yet; a new request waits.
        assert [r.revision for r in rig.ctl.runners()] == [1]
        waiting = asyncio.ensure_future(slow_request(rig.ctl, "waiting", 0.0))
        assert (await busy)["runner"] == old.id  # its request in flight finished
        answer = await waiting
        result = await rollout
        assert result.ok
        assert result.unavailable > 0.25
        assert answer["runner"] != old.id
        assert rig.revisions()[answer["runner"]] == 2
        starts = [e for e in rig.events(RunnerReady) if e.revision == 2]
        stopped = [e for e in rig.events(RunnerStopped) if e.runner == old.id]
        assert rig.bus.history.index(stopped[0]) < rig.bus.history.index(starts[0])
        (finished,) = rig.events(RolloutFinished)
        assert finished.unavailable == result.unavailable

    run(body)


def test_a_new_revision_that_fails_to_start_leaves_the_old_one_serving() -> None:
    async def body(rig: Rig) -> None:
        (old,) = rig.ctl.runners()
        rig.runtime.fail_starts = 1
        result = await rig.roll(2)
        assert not result.ok
        assert result.revision == 1
        assert rig.ctl.revision == 1
        assert [(r.id, r.revision) for r in rig.ctl.runners()] == [(old.id, 1)]
        assert rig.ctl.backoff() is None  # the old revision is not held back by the new one's failure
        (failed,) = rig.events(RolloutFailed)
        assert (failed.revision, failed.serving, failed.stage) == (2, 1, "start")
        assert failed.logs == "fake start failure"
        served = await slow_request(rig.ctl, "after", 0.0)
        assert served["runner"] == old.id

    run(body)


def test_a_failed_recreate_starts_the_old_revision_again() -> None:
    async def body(rig: Rig) -> None:
        rig.runtime.fail_starts = 1
        result = await rig.roll(2, strategy="recreate")
        assert not result.ok
        await rig.ctl.wait_for(lambda: any(r.state == "IDLE" for r in rig.ctl.runners()), timeout=10)
        (runner,) = rig.ctl.runners()
        assert runner.revision == 1
        assert rig.ctl.revision == 1
        assert (await slow_request(rig.ctl, "after", 0.0))["runner"] == runner.id

    run(body)


def test_rollouts_follow_one_another() -> None:
    async def body(rig: Rig) -> None:
        for revision in (2, 3, 4):
            assert (await rig.roll(revision, runners=2)).ok
        await rig.ctl.wait_for(lambda: set(rig.revisions().values()) == {4}, timeout=10)
        assert len(rig.ctl.runners()) == 2
        assert [e.revision for e in rig.events(RolloutFinished)] == [2, 3, 4]

    run(body, max_concurrency=3)
