"""The live view's lines for rollouts (falemu up --watch) and faults (falemu chaos)."""

from __future__ import annotations

import io

from falemu.cli.output import Renderer
from falemu.events import (
    FaultApplied,
    FaultEnded,
    FaultStarted,
    ReloadStarted,
    RolloutFailed,
    RolloutFinished,
    RolloutStarted,
    RunnerReady,
    RunnerStopped,
)


def lines(*events: object, verbose: bool = False) -> list[str]:
    out = io.StringIO()
    renderer = Renderer(stream=out, color=False, verbose=verbose)
    for event in events:
        renderer(event)  # type: ignore[arg-type]
    renderer.flush()
    return out.getvalue().splitlines()


def test_rollout_lines_say_what_changed_and_which_revision_serves() -> None:
    assert lines(
        ReloadStarted("g", revision=2, changes=["server.py", "a.py", "b.py", "c.py"]),
        RolloutStarted("g", revision=2, previous=1, strategy="rolling", runners=1, image="falemu/g:abc"),
        RunnerReady("g", runner="g-2", address="http://h:1", timeline={"start": 0.5}, cold_start=False, revision=2),
        RunnerStopped("g", runner="g-1", reason="rollout"),
        RolloutFinished("g", revision=2, previous=1, strategy="rolling", seconds=3.2),
        RolloutFinished("g", revision=3, previous=2, strategy="recreate", seconds=4.0, unavailable=1.5),
        RolloutFailed(
            "g",
            revision=4,
            serving=3,
            stage="start",
            error_type="runner_scheduling_failure",
            message="exited",
            logs="SyntaxError",
        ),
    ) == [
        "g: server.py, a.py, b.py (+1 more) changed: making revision r2",
        "g: rolling out r2 (rolling): 1 new runner(s) start, the old runners drain once they are ready",
        "[g-2] ready (r2) at http://h:1 in 500 ms (started ahead of requests: start 500 ms)",
        "[g-1] stopped: a newer revision serves now (rollout)",
        "g: r2 serves (rolling, 3.2 s after the change)",
        "g: r3 serves (recreate, 4.0 s after the change, 1.5 s without a runner)",
        "g: r4 failed to start: exited; r3 keeps serving",
        "g: | SyntaxError",
    ]


def test_fault_lines() -> None:
    events = (
        FaultStarted("g", fault="f1", fault_kind="error", description="the gateway answers 503 (2 requests)"),
        FaultApplied("g", fault="f1", fault_kind="error", target="req-1", detail="503"),
        FaultApplied("g", fault="f2", fault_kind="kill", target="g-1", detail="killed while it served request req-2"),
        FaultEnded("g", fault="f1", fault_kind="error", reason="count", applied=2),
    )
    assert lines(*events) == [
        "g: fault f1 in effect: the gateway answers 503 (2 requests)",
        "[g-1] fault f2: killed while it served request req-2",
        "g: fault f1 ended (its count ran out; it hit 2)",
    ]
    assert "[req-1] fault f1: 503" in lines(*events, verbose=True)  # each request it hit, with --verbose
