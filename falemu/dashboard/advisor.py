"""The keep_alive advisor: the team's recorded arrivals replayed through the scaling policy.

For other values of ``keep_alive``, ``min_concurrency`` and ``max_multiplexing``, :func:`simulate`
runs the recorded requests (arrival time and execution seconds) through
:func:`falemu.scaling.policy.decide`, the same pure function the controller applies, and reports what
each setting would have cost: runner starts (each a cold start), cold boots (requests whose startup
took over a second), startup percentiles, runner-seconds idle, in setup and running, and the bill.

The simulation is event-driven and deterministic. At each instant something happens it, in order:
ends the requests due then (their runner goes IDLE when empty), makes ready the runners whose cold
start is over, queues the requests arriving then, hands waiting requests to runners with room (the
fewest in flight first, the oldest on a tie, as the controller does), then applies ``decide``: stops
what it says (billed until then) and starts what it says (SETUP for ``cold_start`` seconds, billed,
as fal bills ``setup()``). ``min_concurrency`` runners are up and idle when the window opens. Every
runner's bill stops when the window closes. Execution times are taken as recorded, also for another
``max_multiplexing`` (a runner that serves more at once may be slower: that is not modelled).
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from falemu.config.model import ScalingConfig
from falemu.dashboard.analytics import COLD_BOOT_SECONDS, percentile
from falemu.scaling.policy import (
    LIVE_STATES,
    SERVING_STATES,
    RunnerState,
    RunnerView,
    WaitingRequest,
    decide,
)

S = RunnerState
DEFAULT_COLD_START = 5.0
KEEP_ALIVE_CHOICES = (0, 10, 30, 60, 300)
MIN_CONCURRENCY_CHOICES = (0, 1)


@dataclass(frozen=True)
class Arrival:
    at: float  # seconds, on any scale shared by the whole trace
    duration: float  # execution seconds on the runner


@dataclass(frozen=True)
class Variant:
    keep_alive: int
    min_concurrency: int
    max_multiplexing: int

    def apply(self, base: ScalingConfig) -> ScalingConfig:
        return dataclasses.replace(
            base,
            keep_alive=self.keep_alive,
            min_concurrency=self.min_concurrency,
            max_multiplexing=max(1, self.max_multiplexing),
        )


@dataclass
class Outcome:
    """What one setting would have done with the trace."""

    variant: Variant
    current: bool
    requests: int
    runner_starts: int
    cold_boots: int
    startup_p50: float | None
    startup_p95: float | None
    setup_seconds: float
    idle_seconds: float
    running_seconds: float
    billed_seconds: float
    cost: float | None
    peak_runners: int

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data.update(data.pop("variant"))
        for key in ("setup_seconds", "idle_seconds", "running_seconds", "billed_seconds"):
            data[key] = round(data[key], 6)
        if data["cost"] is not None:
            data["cost"] = round(data["cost"], 6)
        return data


@dataclass
class _Runner:
    id: str
    seq: int  # creation order: the tie-break among runners started at the same instant
    state: RunnerState
    started_at: float
    since: float  # when the current state began
    ready_at: float | None = None
    in_flight: int = 0
    last_request_at: float | None = None
    served: int = 0
    seconds: dict[str, float] = field(default_factory=dict)

    def enter(self, state: RunnerState, now: float) -> None:
        self.seconds[self.state] = self.seconds.get(self.state, 0.0) + (now - self.since)
        self.state = state
        self.since = now

    def view(self) -> RunnerView:
        return RunnerView(
            id=self.id,
            state=self.state,
            in_flight=self.in_flight,
            started_at=self.started_at,
            ready_at=self.ready_at,
            last_request_at=self.last_request_at,
            ever_served=self.served > 0,
        )


_END, _READY, _ARRIVE = 0, 1, 2  # the order of things happening at the same instant


def simulate(
    config: ScalingConfig,
    arrivals: Sequence[Arrival],
    *,
    cold_start: float,
    start: float | None = None,
    until: float | None = None,
    price_per_second: float | None = None,
) -> Outcome:
    """Run ``arrivals`` through the scaling policy with ``config`` (see the module docstring).

    The window is [start, until]: by default from the first arrival to the last request's end plus
    ``keep_alive``. ``price_per_second`` is the machine's price (times its GPUs); None leaves the cost out.
    """
    trace = sorted(arrivals, key=lambda a: a.at)
    cold_start = max(1e-6, cold_start)
    t0 = start if start is not None else (trace[0].at if trace else 0.0)
    end = until
    if end is None:
        last = max((a.at + a.duration for a in trace), default=t0)
        end = last + cold_start + max(0, config.keep_alive)
    cap = max(1, config.max_multiplexing)
    runners: dict[str, _Runner] = {}
    finished: list[_Runner] = []
    ids = itertools.count()
    events: list[tuple[float, int, int, str]] = []  # (time, kind, seq, runner id) for ends and readies
    ticket = itertools.count()
    waiting: deque[tuple[int, float]] = deque()  # (arrival index, enqueued at)
    startups: list[float] = []
    starts = 0
    peak = 0

    def live() -> int:
        return sum(1 for r in runners.values() if r.state in LIVE_STATES)

    def launch(now: float, warm: bool) -> None:
        seq = next(ids)
        rid = f"r{seq}"
        if warm:
            runners[rid] = _Runner(rid, seq, S.IDLE, started_at=now, since=now, ready_at=now)
            return
        runners[rid] = _Runner(rid, seq, S.SETUP, started_at=now, since=now)
        heapq.heappush(events, (now + cold_start, _READY, next(ticket), rid))

    for _ in range(min(max(0, config.min_concurrency), max(0, config.max_concurrency))):
        launch(t0, warm=True)
    peak = live()

    def free_runner() -> _Runner | None:
        best: _Runner | None = None
        for r in runners.values():
            if r.state not in SERVING_STATES or r.in_flight >= cap:
                continue
            if best is None or (r.in_flight, r.started_at, r.seq) < (best.in_flight, best.started_at, best.seq):
                best = r
        return best

    i = 0
    now = t0
    next_change: float | None = None
    while True:
        candidates = []
        if events:
            candidates.append(events[0][0])
        if i < len(trace):
            candidates.append(max(trace[i].at, t0))
        if next_change is not None:
            candidates.append(next_change)
        if not candidates:
            break
        now = min(candidates)
        if now > end:
            break
        # 1. requests ending now, 2. runners ready now
        while events and events[0][0] <= now:
            _, kind, _, rid = heapq.heappop(events)
            r = runners[rid]
            if kind == _END:
                r.in_flight -= 1
                r.served += 1
                r.last_request_at = now
                if r.in_flight == 0 and r.state is S.RUNNING:
                    r.enter(S.IDLE, now)
            elif r.state is S.SETUP:
                r.ready_at = now
                r.enter(S.IDLE, now)
        # 3. arrivals now
        while i < len(trace) and max(trace[i].at, t0) <= now:
            waiting.append((i, now))
            i += 1
        # 4. hand waiting requests to runners with room
        while waiting:
            free = free_runner()
            if free is None:
                break
            r = free
            index, enqueued = waiting.popleft()
            startups.append(now - trace[index].at if trace[index].at >= t0 else now - enqueued)
            r.in_flight += 1
            if r.state is not S.RUNNING:
                r.enter(S.RUNNING, now)
            heapq.heappush(events, (now + trace[index].duration, _END, next(ticket), r.id))
        # 5. the policy
        views = [r.view() for r in runners.values() if r.state in LIVE_STATES]
        demand_cap = max(1, config.max_concurrency) * cap + 1
        queued = [WaitingRequest(f"q{idx}", at) for idx, at in itertools.islice(waiting, demand_cap)]
        decision = decide(config, views, queued, now)
        for order in decision.stop:
            runners[order.runner].enter(S.TERMINATED, now)
        for _ in range(decision.start):
            launch(now, warm=False)
            starts += 1
        peak = max(peak, live())
        next_change = decision.next_change
        for order in decision.stop:
            finished.append(runners.pop(order.runner))

    for r in runners.values():
        r.enter(S.TERMINATED, max(end, r.since))
    every = [*finished, *runners.values()]
    setup = sum(r.seconds.get(S.SETUP, 0.0) for r in every)
    idle = sum(r.seconds.get(S.IDLE, 0.0) for r in every)
    running = sum(r.seconds.get(S.RUNNING, 0.0) for r in every)
    billed = setup + idle + running
    return Outcome(
        variant=Variant(config.keep_alive, config.min_concurrency, config.max_multiplexing),
        current=False,
        requests=len(startups),
        runner_starts=starts,
        cold_boots=sum(1 for s in startups if s > COLD_BOOT_SECONDS),
        startup_p50=percentile(startups, 50),
        startup_p95=percentile(startups, 95),
        setup_seconds=setup,
        idle_seconds=idle,
        running_seconds=running,
        billed_seconds=billed,
        cost=None if price_per_second is None else billed * price_per_second,
        peak_runners=peak,
    )


def variants(
    base: ScalingConfig,
    keep_alive: Iterable[int] | None = None,
    min_concurrency: Iterable[int] | None = None,
    max_multiplexing: Iterable[int] | None = None,
) -> list[Variant]:
    """The grid to compare: the given values (default: fal's usual keep_alive choices, 0 and 1
    minimum runners, the current multiplexing), always including the current setting."""
    ka = sorted({base.keep_alive, *(KEEP_ALIVE_CHOICES if keep_alive is None else keep_alive)})
    mc = sorted({base.min_concurrency, *(MIN_CONCURRENCY_CHOICES if min_concurrency is None else min_concurrency)})
    mm = sorted({base.max_multiplexing, *(() if max_multiplexing is None else max_multiplexing)})
    return [Variant(k, m, x) for k in ka for m in mc for x in mm if k >= 0 and m >= 0 and x >= 1]


def advise(
    base: ScalingConfig,
    arrivals: Sequence[Arrival],
    grid: Sequence[Variant],
    *,
    cold_start: float,
    price_per_second: float | None = None,
    start: float | None = None,
    until: float | None = None,
) -> dict[str, Any]:
    """Every variant of ``grid`` over the same window (long enough for the longest keep_alive)."""
    trace = sorted(arrivals, key=lambda a: a.at)
    t0 = start if start is not None else (trace[0].at if trace else 0.0)
    if until is None:
        last = max((a.at + a.duration for a in trace), default=t0)
        longest = max([base.keep_alive, *(v.keep_alive for v in grid)])
        until = last + max(0.0, cold_start) + longest
    current = Variant(base.keep_alive, base.min_concurrency, base.max_multiplexing)
    rows = []
    for variant in grid:
        outcome = simulate(
            variant.apply(base),
            trace,
            cold_start=cold_start,
            start=t0,
            until=until,
            price_per_second=price_per_second,
        )
        outcome.current = variant == current
        rows.append(outcome.to_dict())
    best = _best(rows)
    return {
        "window": {"start": t0, "end": until, "seconds": max(0.0, until - t0)},
        "requests": len(trace),
        "cold_start_seconds": cold_start,
        "price_per_second": price_per_second,
        "variants": rows,
        "recommendation": best,
    }


def _best(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The cheapest setting whose startup p95 is no worse than the current one's plus a second."""
    current = next((r for r in rows if r["current"]), None)
    if current is None or not rows:
        return None
    limit = (current["startup_p95"] or 0.0) + 1.0
    key = "cost" if current["cost"] is not None else "billed_seconds"
    fit = [r for r in rows if (r["startup_p95"] or 0.0) <= limit]
    if not fit:
        return None
    cheapest = min(fit, key=lambda r: (r[key], r["startup_p95"] or 0.0, -r["keep_alive"]))
    saving = current[key] - cheapest[key]
    if saving <= 0 or math.isclose(saving, 0.0, abs_tol=1e-9):
        return {**_setting(current), "saving": 0.0, "reason": "the current setting is the cheapest that keeps startup"}
    return {
        **_setting(cheapest),
        "saving": round(saving, 6),
        "reason": f"saves {round(saving, 6)} {'USD' if key == 'cost' else 'runner-seconds'} with startup p95 "
        f"{cheapest['startup_p95'] or 0:.2f} s (now {current['startup_p95'] or 0:.2f} s)",
    }


def _setting(row: dict[str, Any]) -> dict[str, Any]:
    return {k: row[k] for k in ("keep_alive", "min_concurrency", "max_multiplexing")}
