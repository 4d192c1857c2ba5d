"""The fault schedule (falemu.chaos.faults): pure decisions on a clock value, and spec checking."""

from __future__ import annotations

import pytest

from falemu.chaos.faults import DEFAULT_WINDOW, FaultSchedule, parse_spec
from falemu.errors import UsageError


def spec(**data: object):  # type: ignore[no-untyped-def]
    return parse_spec({"app": "greeter", **data})


def test_specs_are_checked_with_a_hint() -> None:
    cases = [
        ({"kind": "explode"}, "unknown fault kind"),
        ({"kind": "error", "status": 500}, "503, 504 or 429"),
        ({"kind": "error", "status": 503, "error_type": "request_timeout"}, "not fal's error type for 503"),
        ({"kind": "error", "status": 429, "error_type": "runner_disconnected"}, "not fal's error type for 429"),
        ({"kind": "latency"}, "needs delay"),
        ({"kind": "starts", "mode": "slow"}, "need delay"),
        ({"kind": "data", "mode": "broken"}, "not read-only or full"),
        ({"kind": "data", "mode": "full", "count": 2}, "bounded by seconds"),
        ({"kind": "error", "status": 503, "share": 1.5}, "not in (0, 1]"),
        ({"kind": "error", "status": 503, "count": 0}, "count must be at least 1"),
        ({"kind": "error", "status": 503, "seconds": "soon"}, "bad fault field"),
        ({"kind": "kill", "runner": "g-1", "count": 2}, "kills that one runner"),
        ({"kind": "kill", "blast_radius": 3}, "unknown fault field"),
    ]
    for data, message in cases:
        with pytest.raises(UsageError) as caught:
            spec(**data)
        assert message in caught.value.message, (data, caught.value.message)
        assert caught.value.hint
    with pytest.raises(UsageError, match="needs the app"):
        parse_spec({"kind": "kill"})


def test_defaults_make_every_fault_bounded() -> None:
    assert spec(kind="error", status=503).seconds == DEFAULT_WINDOW
    assert spec(kind="error", status=503).error_type == "runner_scheduling_failure"
    assert spec(kind="error", status=504).error_type == "request_timeout"
    assert spec(kind="error", status=429).error_type is None
    assert spec(kind="latency", delay=1, count=3).seconds is None
    assert spec(kind="kill").count == 1
    assert spec(kind="starts").mode == "fail"
    assert spec(kind="starts", delay=5).mode == "slow"
    assert spec(kind="data", mode="full").seconds == DEFAULT_WINDOW
    assert spec(kind="error", status=503, count=3).describe() == (
        "the gateway answers 503 (runner_scheduling_failure) (3 requests)"
    )


def test_a_share_hits_exactly_that_part_of_the_requests_spread_evenly() -> None:
    schedule = FaultSchedule()
    schedule.add(spec(kind="error", status=503, share=0.5, seconds=100), now=0.0)
    hits = [schedule.for_request("greeter", 1.0) for _ in range(10)]
    pattern = [plan is not None and plan.answer is not None for plan in hits]
    assert pattern == [False, True] * 5
    schedule = FaultSchedule()
    schedule.add(spec(kind="latency", delay=1, share=0.3, seconds=100), now=0.0)
    delays = [plan.delay if plan else 0 for plan in (schedule.for_request("greeter", 1.0) for _ in range(100))]
    assert delays.count(1.0) == 30


def test_a_count_ends_the_fault_with_its_last_hit() -> None:
    schedule = FaultSchedule()
    fault = schedule.add(spec(kind="error", status=504, count=2), now=0.0)
    first = schedule.for_request("greeter", 1.0)
    assert first is not None
    assert first.answer == (504, "request_timeout", "Request timed out (fault f1, falemu chaos)")
    assert first.ended == ()
    second = schedule.for_request("greeter", 1.0)
    assert second is not None
    assert second.ended == (fault,)
    assert fault.ended == "count"
    assert fault.applied == 2
    assert schedule.for_request("greeter", 1.0) is None
    assert schedule.for_request("other", 1.0) is None


def test_a_window_ends_on_time() -> None:
    schedule = FaultSchedule()
    fault = schedule.add(spec(kind="latency", delay=0.5, seconds=10), now=100.0)
    assert schedule.next_deadline() == 110.0
    plan = schedule.for_request("greeter", 105.0)
    assert plan is not None
    assert plan.delay == 0.5
    assert schedule.expire(109.9) == []
    assert schedule.expire(110.0) == [fault]
    assert fault.ended == "window"
    assert schedule.next_deadline() is None
    assert schedule.for_request("greeter", 111.0) is None


def test_faults_combine_and_an_error_wins() -> None:
    schedule = FaultSchedule()
    schedule.add(spec(kind="latency", delay=1, count=5), now=0.0)
    schedule.add(spec(kind="latency", delay=2, count=5), now=0.0)
    schedule.add(spec(kind="cut", after_bytes=10, count=5), now=0.0)
    plan = schedule.for_request("greeter", 0.0)
    assert plan is not None
    assert (plan.delay, plan.cut_after, plan.answer) == (3.0, 10, None)
    schedule.add(spec(kind="error", status=503, count=1), now=0.0)
    plan = schedule.for_request("greeter", 0.0)
    assert plan is not None
    assert plan.answer is not None
    assert (plan.delay, plan.cut_after) == (0.0, None)  # the gateway answers: nothing reaches a runner


def test_start_faults_fail_slow_and_break_data_per_runner() -> None:
    schedule = FaultSchedule()
    fails = schedule.add(spec(kind="starts", mode="fail", count=2), now=0.0)
    data = schedule.add(spec(kind="data", mode="read-only", runners=1, seconds=30), now=0.0)
    first = schedule.for_start("greeter", "g-1", 1.0)
    assert first is not None
    assert (first.fail, first.data_mode) == (fails, "read-only")
    assert data.targets == ["g-1"]
    second = schedule.for_start("greeter", "g-2", 1.0)
    assert second is not None
    assert (second.fail, second.data_mode, second.ended) == (fails, None, (fails,))
    assert schedule.for_start("greeter", "g-3", 1.0) is None
    slow = schedule.add(spec(kind="starts", delay=7, count=1), now=2.0)
    plan = schedule.for_start("greeter", "g-4", 2.0)
    assert plan is not None
    assert (plan.fail, plan.delay, plan.ended) == (None, 7.0, (slow,))


def test_kill_next_arms_on_the_next_lease_only() -> None:
    schedule = FaultSchedule()
    fault = schedule.add(spec(kind="kill", count=2), now=0.0)
    assert schedule.for_lease("other", "o-1", 0.0) == (None, [])
    assert schedule.for_lease("greeter", "g-1", 0.0) == (fault, [])
    assert schedule.for_lease("greeter", "g-2", 0.0) == (fault, [fault])
    assert fault.targets == ["g-1", "g-2"]
    assert schedule.for_lease("greeter", "g-3", 0.0) == (None, [])


def test_rows_say_what_is_left() -> None:
    schedule = FaultSchedule()
    fault = schedule.add(spec(kind="error", status=503, count=3, seconds=20), now=0.0)
    schedule.for_request("greeter", 5.0)
    row = fault.row(5.0)
    assert (row["id"], row["kind"], row["applied"], row["remaining"], row["seconds_left"]) == (
        "f1",
        "error",
        1,
        2,
        15.0,
    )
    assert schedule.end("f1", "cleared") is fault
    assert schedule.end("f1", "cleared") is None
    assert schedule.active() == []
