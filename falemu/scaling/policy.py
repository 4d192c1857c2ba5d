"""The scaling policy: a pure function from the pool's state to a scaling decision.

No I/O and no clock of its own: the caller passes ``now`` (seconds on the clock's monotonic scale)
together with the start times, request times and enqueue times measured on the same clock, so tests
drive it with :class:`falemu.clock.FakeClock`. :class:`falemu.scaling.controller.AppController`
applies the decision through the Runtime.

fal documents the parameters but leaves the formula that combines them open. falemu uses::

    waiting   = requests waiting for a runner that have waited >= scaling_delay seconds
    demand    = in_flight + waiting                  (requests, summed over live runners)
    needed    = ceil(demand / max_multiplexing)      (runners that can carry the demand)
    buffer    = max(concurrency_buffer, ceil(concurrency_buffer_perc / 100 * needed))
    target    = min(max_concurrency, max(min_concurrency, needed + buffer))
    start     = max(0, target - live)                (live = PENDING, SETUP, IDLE, RUNNING runners)

``concurrency_buffer_perc`` is a percentage of the runners the current demand needs (with
``max_multiplexing = 1`` that is the request volume fal's docs speak of). With no traffic the target
is ``max(min_concurrency, concurrency_buffer)``: the buffer keeps warm runners even at rest, and
whichever of the two is higher wins, as fal's docs say. A request that has waited less than
``scaling_delay`` seconds still takes free capacity on a live runner; it only does not yet count
towards starting a new runner.

Scale-down is lazy. Runners above the target are stopped only when they are idle and:

* ``keep_alive`` seconds have passed since their last request ended (never earlier), or
* they never served a request and the app has neither ``min_concurrency`` nor a buffer
  (``concurrency_buffer`` or ``concurrency_buffer_perc``): they are reaped 10 seconds after they
  became ready, whatever ``keep_alive`` is (fal's rule for a newly started runner that never picks up
  a request). With a minimum or a buffer, a runner that never served counts its idle time from when
  it became ready, against ``keep_alive``.

The runners whose idle deadline passed first are stopped first, and never so many that fewer than
``target`` (hence never fewer than ``min_concurrency``) runners stay live. Idle runners above
``max_concurrency`` (after the setting was lowered) stop at once. Busy runners are never stopped by the
policy.

Back-off after failed starts: after ``n`` consecutive failed starts, no runner starts until
``min(30 * n, 600)`` seconds after the last failure (fal's FAILURE_DELAY: +30 s per failure, capped at
10 minutes); a successful start resets ``n`` to 0.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass

from falemu.config.model import ScalingConfig

NEVER_SERVED_REAP_SECONDS = 10.0
BACKOFF_STEP_SECONDS = 30.0
BACKOFF_MAX_SECONDS = 600.0


class RunnerState(enum.StrEnum):
    """fal's runner states (``fal.sdk.RunnerState``; FAILURE_DELAY is CRASH_BACKOFF's wire name)."""

    PENDING = "PENDING"
    SETUP = "SETUP"
    IDLE = "IDLE"
    RUNNING = "RUNNING"
    DRAINING = "DRAINING"
    TERMINATING = "TERMINATING"
    TERMINATED = "TERMINATED"
    FAILURE_DELAY = "FAILURE_DELAY"


LIVE_STATES = frozenset({RunnerState.PENDING, RunnerState.SETUP, RunnerState.IDLE, RunnerState.RUNNING})
SERVING_STATES = frozenset({RunnerState.IDLE, RunnerState.RUNNING})


class StopReason(enum.StrEnum):
    KEEP_ALIVE = "keep_alive"  # idle for keep_alive seconds after its last request
    NEVER_SERVED = "never_served"  # started, never picked up a request, no minimum or buffer
    ABOVE_MAX = "above_max_concurrency"


@dataclass(frozen=True)
class RunnerView:
    """What the policy needs to know about one runner."""

    id: str
    state: RunnerState
    in_flight: int = 0
    started_at: float = 0.0  # when the start was ordered
    ready_at: float | None = None  # when it became ready; None while PENDING/SETUP
    last_request_at: float | None = None  # when its last request ended
    ever_served: bool = False


@dataclass(frozen=True)
class WaitingRequest:
    request_id: str
    enqueued_at: float


@dataclass(frozen=True)
class StopOrder:
    runner: str
    reason: StopReason


@dataclass(frozen=True)
class Decision:
    start: int  # how many runners to start now
    stop: tuple[StopOrder, ...]  # which idle runners to stop now, and why
    target: int  # the number of live runners the policy aims for
    demand: int  # in-flight plus counted waiting requests
    live: int
    backoff_until: float | None = None  # starts are held back until this time
    next_change: float | None = None  # the earliest future time the decision can change without new input


def backoff_seconds(failures: int) -> float:
    """The FAILURE_DELAY after ``failures`` consecutive failed starts."""
    if failures <= 0:
        return 0.0
    return min(BACKOFF_STEP_SECONDS * failures, BACKOFF_MAX_SECONDS)


def target_runners(config: ScalingConfig, demand: int) -> int:
    """The number of live runners wanted for ``demand`` requests (see the module docstring)."""
    multiplexing = max(1, config.max_multiplexing)
    needed = math.ceil(demand / multiplexing) if demand > 0 else 0
    perc_buffer = math.ceil(max(0, config.concurrency_buffer_perc) * needed / 100)
    buffer = max(max(0, config.concurrency_buffer), perc_buffer)
    wanted = max(max(0, config.min_concurrency), needed + buffer)
    return max(0, min(max(0, config.max_concurrency), wanted))


def idle_deadline(config: ScalingConfig, runner: RunnerView) -> float | None:
    """When an idle runner becomes eligible for stopping; None when it is not idle."""
    if runner.state not in SERVING_STATES or runner.in_flight > 0:
        return None
    if runner.ever_served and runner.last_request_at is not None:
        return runner.last_request_at + max(0, config.keep_alive)
    since = runner.ready_at if runner.ready_at is not None else runner.started_at
    if config.min_concurrency <= 0 and config.concurrency_buffer <= 0 and config.concurrency_buffer_perc <= 0:
        return since + NEVER_SERVED_REAP_SECONDS
    return since + max(0, config.keep_alive)


def decide(
    config: ScalingConfig,
    runners: Sequence[RunnerView],
    waiting: Sequence[WaitingRequest],
    now: float,
    *,
    failures: int = 0,
    last_failure_at: float | None = None,
) -> Decision:
    """Compute what to start and stop now; pure, so it can be called as often as wanted."""
    live = [r for r in runners if r.state in LIVE_STATES]
    in_flight = sum(r.in_flight for r in live)
    delay = max(0, config.scaling_delay)
    counted = [w for w in waiting if now - w.enqueued_at >= delay]
    demand = in_flight + len(counted)
    target = target_runners(config, demand)
    changes: list[float] = [w.enqueued_at + delay for w in waiting if now - w.enqueued_at < delay]

    # Starts, unless a failed start holds them back.
    backoff_until: float | None = None
    if failures > 0 and last_failure_at is not None:
        until = last_failure_at + backoff_seconds(failures)
        if now < until:
            backoff_until = until
    start = max(0, target - len(live))
    if backoff_until is not None and start > 0:
        changes.append(backoff_until)
        start = 0

    # Stops: idle runners above the target, earliest idle deadline first.
    stops: list[StopOrder] = []
    idle = [(r, idle_deadline(config, r)) for r in live]
    candidates = sorted(((d, r) for r, d in idle if d is not None), key=lambda pair: (pair[0], pair[1].id))
    remaining = len(live)
    cap = max(0, config.max_concurrency)
    for deadline, runner in candidates:
        if remaining <= target:
            break
        if remaining > cap:
            stops.append(StopOrder(runner.id, StopReason.ABOVE_MAX))
            remaining -= 1
        elif deadline <= now:
            reason = StopReason.KEEP_ALIVE if runner.ever_served else _never_served_reason(config)
            stops.append(StopOrder(runner.id, reason))
            remaining -= 1
        else:
            changes.append(deadline)
    future = [t for t in changes if t > now]
    return Decision(
        start=start,
        stop=tuple(stops),
        target=target,
        demand=demand,
        live=len(live),
        backoff_until=backoff_until,
        next_change=min(future) if future else None,
    )


def _never_served_reason(config: ScalingConfig) -> StopReason:
    if config.min_concurrency <= 0 and config.concurrency_buffer <= 0 and config.concurrency_buffer_perc <= 0:
        return StopReason.NEVER_SERVED
    return StopReason.KEEP_ALIVE
