"""The keep_alive advisor against a plain simulation of the pure scaling policy.

The reference below steps time on a fixed grid and asks :func:`falemu.scaling.policy.decide` at every
step; the advisor jumps from event to event. With every time of the trace on the grid, both must give
the same figures for every setting.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import pytest

from falemu.config.model import ScalingConfig
from falemu.dashboard.advisor import Arrival, Variant, advise, simulate, variants
from falemu.scaling.policy import LIVE_STATES, SERVING_STATES, RunnerState, RunnerView, WaitingRequest, decide

S = RunnerState
DT = 0.5
COLD = 2.0

# Bursts, gaps longer and shorter than each keep_alive, overlapping requests (times on the 0.5 s grid).
TRACE = [
    Arrival(0.0, 1.0),
    Arrival(0.5, 3.0),
    Arrival(1.0, 0.5),
    Arrival(6.0, 1.5),
    Arrival(20.0, 2.0),
    Arrival(20.0, 2.0),
    Arrival(20.5, 1.0),
    Arrival(48.0, 0.5),
    Arrival(49.0, 4.0),
    Arrival(120.0, 1.0),
    Arrival(121.5, 1.0),
    Arrival(200.0, 6.0),
]


@dataclass
class Ref:
    seq: int
    state: RunnerState
    started_at: float
    ready_at: float | None = None
    in_flight: int = 0
    last: float | None = None
    served: int = 0
    ends: list[float] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)


def reference(config: ScalingConfig, trace: list[Arrival], end: float) -> dict[str, float]:
    """Time-stepped: at each grid time, ends, readies, arrivals, hand-out, then the policy."""
    runners: list[Ref] = [
        Ref(i, S.IDLE, 0.0, ready_at=0.0) for i in range(min(config.min_concurrency, config.max_concurrency))
    ]
    waiting: list[int] = []
    startups: list[float] = []
    starts = 0
    cap = max(1, config.max_multiplexing)
    steps = round(end / DT)
    for k in range(steps + 1):
        t = k * DT
        for r in runners:
            done = [e for e in r.ends if e <= t]
            for _ in done:
                r.in_flight -= 1
                r.served += 1
                r.last = t
            r.ends = [e for e in r.ends if e > t]
            if r.state is S.RUNNING and r.in_flight == 0:
                r.state = S.IDLE
            if r.state is S.SETUP and r.started_at + COLD <= t:
                r.state, r.ready_at = S.IDLE, t
        waiting += [i for i, a in enumerate(trace) if a.at == t]
        while waiting:
            free = [r for r in runners if r.state in SERVING_STATES and r.in_flight < cap]
            if not free:
                break
            r = min(free, key=lambda x: (x.in_flight, x.started_at, x.seq))
            i = waiting.pop(0)
            startups.append(t - trace[i].at)
            r.in_flight += 1
            r.state = S.RUNNING
            r.ends.append(t + trace[i].duration)
        views = [
            RunnerView(str(r.seq), r.state, r.in_flight, r.started_at, r.ready_at, r.last, r.served > 0)
            for r in runners
            if r.state in LIVE_STATES
        ]
        decision = decide(config, views, [WaitingRequest(str(i), trace[i].at) for i in waiting], t)
        for order in decision.stop:
            next(r for r in runners if str(r.seq) == order.runner).state = S.TERMINATED
        for _ in range(decision.start):
            runners.append(Ref(len(runners), S.SETUP, t))
            starts += 1
        if k < steps:
            for r in runners:
                if r.state is not S.TERMINATED:
                    r.seconds[r.state] = r.seconds.get(r.state, 0.0) + DT
    ordered = sorted(startups)

    def pct(p: float) -> float:
        return ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1]

    total = {s: sum(r.seconds.get(s, 0.0) for r in runners) for s in (S.SETUP, S.IDLE, S.RUNNING)}
    return {
        "requests": len(startups),
        "runner_starts": starts,
        "cold_boots": sum(1 for s in startups if s > 1.0),
        "startup_p50": pct(50),
        "startup_p95": pct(95),
        "setup_seconds": total[S.SETUP],
        "idle_seconds": total[S.IDLE],
        "running_seconds": total[S.RUNNING],
    }


BASE = ScalingConfig(keep_alive=10, min_concurrency=0, max_concurrency=3, max_multiplexing=1)
GRID = [Variant(k, m, x) for k in (0, 5, 10, 30, 60) for m in (0, 1) for x in (1, 2)]


@pytest.mark.parametrize(
    "variant", GRID, ids=lambda v: f"ka{v.keep_alive}-min{v.min_concurrency}-mux{v.max_multiplexing}"
)
def test_advisor_matches_a_stepped_simulation_of_the_policy(variant: Variant) -> None:
    config = variant.apply(BASE)
    end = 300.0
    expected = reference(config, TRACE, end)
    got = simulate(config, TRACE, cold_start=COLD, start=0.0, until=end, price_per_second=0.001)
    for key, value in expected.items():
        assert getattr(got, key) == pytest.approx(value, abs=1e-9), key
    assert got.billed_seconds == pytest.approx(
        expected["setup_seconds"] + expected["idle_seconds"] + expected["running_seconds"]
    )
    assert got.cost == pytest.approx(got.billed_seconds * 0.001)


def test_longer_keep_alive_trades_idle_seconds_for_fewer_cold_starts() -> None:
    result = advise(BASE, TRACE, variants(BASE, keep_alive=[0, 300], min_concurrency=[0]), cold_start=COLD, start=0.0)
    rows = {r["keep_alive"]: r for r in result["variants"]}
    assert rows[300]["runner_starts"] < rows[0]["runner_starts"]
    assert rows[300]["idle_seconds"] > rows[0]["idle_seconds"]
    assert rows[10]["current"]
    assert not rows[0]["current"]
    # every variant is billed over the same window, long enough for the longest keep_alive
    assert result["window"]["end"] >= 206.0 + 300


def test_min_concurrency_runners_are_billed_for_the_whole_window() -> None:
    config = dataclasses.replace(BASE, min_concurrency=1, keep_alive=0)
    quiet = simulate(config, [], cold_start=COLD, start=0.0, until=100.0, price_per_second=None)
    assert quiet.idle_seconds == pytest.approx(100.0)
    assert quiet.runner_starts == 0
    assert quiet.cost is None
