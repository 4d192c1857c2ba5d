"""Rolling out a new revision of an app through its scaling controller, by fal's deployment strategies.

``rolling`` (fal's default): the new revision's runners start beside the serving ones; once every one
of them is ready, the alias switches (new requests go to them) and the old runners retire: idle ones
stop, busy ones finish their requests first. Nothing is dropped and there is no gap.

``recreate``: the old runners retire first (their requests in flight finish); requests that arrive
meanwhile wait for a runner, as they wait for a cold start. Once the old runners are gone, the new
revision's runners start, and the alias switches when they are ready. The wait is recreate's gap: it
is as long as the old runners' drain plus the new runners' start-up, and it shows in
:class:`~falemu.events.RolloutFinished` as ``unavailable``.

In both, a new runner that fails to start (its process exits, ``setup()`` raises, ``startup_timeout``
runs out) ends the rollout: the new runners are stopped and the previous revision keeps serving. Under
recreate its runners are started again (the gap grows by their start-up). The failure carries the
runner's error type, message and last log lines.

The decisions are pure (:func:`plan_rollout`, :func:`inherit_scale`, :func:`start_verdict`); only
:func:`roll_out` touches the controller, on its event loop.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from falemu.clock import Clock
from falemu.config.model import AppConfig, ScalingConfig
from falemu.errors import RunnerError
from falemu.events import EventSink, RolloutFailed, RolloutFinished, RolloutStarted

if TYPE_CHECKING:
    from falemu.runtime.base import RunnerSpec
    from falemu.scaling.controller import AppController

Strategy = Literal["rolling", "recreate"]
STRATEGIES: tuple[Strategy, ...] = ("rolling", "recreate")

# fal keeps these scale settings of the running revision on a new deploy unless the pyproject sets
# app_scale_settings = true (fal/cli/deploy_check.py: INHERITED_SCALE_FIELDS); machine types,
# max_multiplexing and startup_timeout always come from the new code.
INHERITED_SCALE_FIELDS = (
    "keep_alive",
    "max_concurrency",
    "min_concurrency",
    "concurrency_buffer",
    "concurrency_buffer_perc",
    "scaling_delay",
    "request_timeout",
    "request_start_timeout",
)


@dataclass(frozen=True)
class RolloutPlan:
    strategy: Strategy
    runners: int  # how many runners of the new revision start
    note: str = ""  # why the strategy differs from the app's, when it does


def strategy_of(app: AppConfig) -> Strategy:
    """The app's ``deployment_strategy``; fal's default, rolling, when unset (fal refuses other values)."""
    value = (app.deployment_strategy or "rolling").strip().lower()
    return "recreate" if value == "recreate" else "rolling"


def plan_rollout(strategy: Strategy, scaling: ScalingConfig, live: int, *, side_by_side: bool = True) -> RolloutPlan:
    """What a rollout does: as many new runners as are live now (at least one, to prove the revision
    starts, and at least ``min_concurrency``; at most ``max_concurrency``).

    ``side_by_side`` is False where two runners of an app cannot run at once (the process runtime binds
    the app's port itself): rolling then falls back to recreate.
    """
    runners = max(1, live, scaling.min_concurrency)
    runners = min(runners, max(1, scaling.max_concurrency))
    if strategy == "rolling" and not side_by_side:
        return RolloutPlan(
            "recreate", 1, note="the process runtime runs one runner per app: the old one stops before the new starts"
        )
    return RolloutPlan(strategy, runners)


def inherit_scale(running: AppConfig, new: AppConfig) -> AppConfig:
    """``new`` with the running revision's inherited scale settings, as ``fal deploy`` does (unless
    the new config sets ``app_scale_settings = true``)."""
    if new.reset_scale:
        return new
    kept = {name: getattr(running.scaling, name) for name in INHERITED_SCALE_FIELDS}
    return dataclasses.replace(new, scaling=dataclasses.replace(new.scaling, **kept), regions=running.regions)


Verdict = Literal["waiting", "ready", "failed"]


def start_verdict(wanted: int, ready: int, failed: int, gone: int) -> Verdict:
    """Where the new revision's start stands: every runner ready, one failed (or stopped before it
    was ready), or still waiting."""
    if failed or gone:
        return "failed"
    return "ready" if ready >= wanted else "waiting"


@dataclass
class RolloutResult:
    ok: bool
    revision: int  # the revision serving afterwards
    seconds: float = 0.0
    unavailable: float = 0.0
    error: RunnerError | None = None


async def roll_out(
    controller: AppController,
    spec: RunnerSpec,
    revision: int,
    *,
    plan: RolloutPlan,
    app: AppConfig,
    events: EventSink,
    clock: Clock,
    since: float | None = None,
    on_switch: Callable[[], None] | None = None,
) -> RolloutResult:
    """Roll ``revision`` (runners from ``spec``, config ``app``) out by ``plan``; runs on the controller's loop.

    ``on_switch`` runs at the alias switch, before the first request can reach the new revision (the
    gateway takes the new config there). ``since`` is when the change was seen (for the durations).
    """
    name = controller.name
    previous = controller.revision
    began = clock.now() if since is None else since
    image = spec.prepared.image or ""
    events(
        RolloutStarted(
            name, revision=revision, previous=previous, strategy=plan.strategy, runners=plan.runners, image=image
        )
    )
    unavailable_from: float | None = None
    if plan.strategy == "recreate":
        controller.hold_starts(True)
        unavailable_from = clock.now()
        controller.retire(controller.runners_of(other_than=revision), "rollout")
        try:
            await controller.wait_for(lambda: not controller.runners_of(other_than=revision))
        except BaseException:
            controller.hold_starts(False)
            raise
    ids = controller.launch_revision(spec, revision, plan.runners)

    def verdict() -> Verdict:
        ready, errors, gone = controller.start_state(ids)
        return start_verdict(len(ids), ready, len(errors), gone)

    try:
        await controller.wait_for(lambda: verdict() != "waiting")
    except BaseException:
        controller.retire(ids, "rollout_cancelled")
        controller.forget_starts(ids)
        if plan.strategy == "recreate":
            controller.hold_starts(False)
        raise
    _, errors, _ = controller.start_state(ids)
    controller.forget_starts(ids)
    if verdict() == "failed":
        controller.retire(ids, "rollout_failed")
        error = errors[0] if errors else RunnerError(f"a runner of revision {revision} stopped before it was ready")
        if plan.strategy == "recreate":
            controller.hold_starts(False)
            controller.warm(plan.runners)  # the previous revision serves again
        events(
            RolloutFailed(
                name,
                revision=revision,
                serving=previous,
                stage="start",
                error_type=error.error_type,
                message=error.message,
                logs=error.logs,
            )
        )
        return RolloutResult(False, previous, clock.now() - began, error=error)
    if on_switch is not None:
        on_switch()
    controller.switch_to(revision, spec, app)
    now = clock.now()
    gap = now - unavailable_from if unavailable_from is not None else 0.0
    events(
        RolloutFinished(
            name, revision=revision, previous=previous, strategy=plan.strategy, seconds=now - began, unavailable=gap
        )
    )
    return RolloutResult(True, revision, now - began, gap)
