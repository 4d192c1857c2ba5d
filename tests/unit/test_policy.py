"""The pure scaling policy, one parameter at a time, on a fake clock."""

from __future__ import annotations

from dataclasses import replace

import pytest

from falemu.clock import FakeClock
from falemu.config.model import ScalingConfig
from falemu.scaling.policy import (
    RunnerState,
    RunnerView,
    StopReason,
    WaitingRequest,
    backoff_seconds,
    decide,
    target_runners,
)

S = RunnerState


def idle(rid: str, *, last: float | None, ready: float = 0.0, served: bool = True) -> RunnerView:
    return RunnerView(
        id=rid, state=S.IDLE, in_flight=0, started_at=ready, ready_at=ready, last_request_at=last, ever_served=served
    )


def busy(rid: str, n: int = 1, *, at: float = 0.0) -> RunnerView:
    return RunnerView(id=rid, state=S.RUNNING, in_flight=n, started_at=at, ready_at=at, ever_served=True)


def waiting(n: int, at: float) -> list[WaitingRequest]:
    return [WaitingRequest(f"r{i}", at) for i in range(n)]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


# fal's defaults: scale to zero, at most 2 runners, one request per runner.
DEFAULT = ScalingConfig()


def test_no_traffic_no_runners() -> None:
    d = decide(DEFAULT, [], [], 1000.0)
    assert (d.start, d.stop, d.target) == (0, (), 0)


def test_one_waiting_request_starts_one_runner(clock: FakeClock) -> None:
    d = decide(DEFAULT, [], waiting(1, clock.now()), clock.now())
    assert d.start == 1
    assert d.target == 1


def test_starting_runner_counts_as_capacity(clock: FakeClock) -> None:
    pending = RunnerView(id="a", state=S.PENDING, started_at=clock.now())
    d = decide(DEFAULT, [pending], waiting(1, clock.now()), clock.now())
    assert d.start == 0


# max_concurrency


def test_max_concurrency_caps_scale_out(clock: FakeClock) -> None:
    cfg = replace(DEFAULT, max_concurrency=2)
    d = decide(cfg, [], waiting(10, clock.now()), clock.now())
    assert d.start == 2
    assert d.target == 2
    d = decide(cfg, [busy("a"), busy("b")], waiting(10, clock.now()), clock.now())
    assert d.start == 0


def test_max_concurrency_lowered_stops_idle_runners_at_once(clock: FakeClock) -> None:
    cfg = replace(DEFAULT, max_concurrency=1, keep_alive=300)
    runners = [idle("a", last=clock.now()), idle("b", last=clock.now()), busy("c")]
    d = decide(cfg, runners, [], clock.now())
    assert {s.runner for s in d.stop} == {"a", "b"}
    assert {s.reason for s in d.stop} == {StopReason.ABOVE_MAX}


def test_max_concurrency_zero_never_starts(clock: FakeClock) -> None:
    cfg = replace(DEFAULT, max_concurrency=0)
    assert decide(cfg, [], waiting(3, clock.now()), clock.now()).start == 0


# min_concurrency


def test_min_concurrency_starts_runners_without_traffic(clock: FakeClock) -> None:
    cfg = replace(DEFAULT, min_concurrency=2, max_concurrency=5)
    d = decide(cfg, [], [], clock.now())
    assert d.start == 2
    assert d.target == 2


def test_min_concurrency_never_stops_below_minimum(clock: FakeClock) -> None:
    cfg = replace(DEFAULT, min_concurrency=1, keep_alive=5, max_concurrency=5)
    runners = [idle("a", last=clock.now()), idle("b", last=clock.now() + 1)]
    clock.advance(3600)
    d = decide(cfg, runners, [], clock.now())
    assert [s.runner for s in d.stop] == ["a"]  # the one idle longest goes, one stays
    assert d.stop[0].reason is StopReason.KEEP_ALIVE


def test_min_concurrency_is_capped_by_max(clock: FakeClock) -> None:
    cfg = replace(DEFAULT, min_concurrency=5, max_concurrency=3)
    assert decide(cfg, [], [], clock.now()).start == 3


# concurrency_buffer and concurrency_buffer_perc


def test_buffer_keeps_warm_runners_at_rest(clock: FakeClock) -> None:
    cfg = replace(DEFAULT, concurrency_buffer=2, max_concurrency=10)
    assert decide(cfg, [], [], clock.now()).start == 2


def test_buffer_adds_to_demand(clock: FakeClock) -> None:
    cfg = replace(DEFAULT, concurrency_buffer=2, max_concurrency=10)
    d = decide(cfg, [busy("a"), busy("b"), busy("c")], [], clock.now())
    assert d.target == 5
    assert d.start == 2


def test_buffer_higher_than_min_takes_precedence(clock: FakeClock) -> None:
    cfg = replace(DEFAULT, min_concurrency=1, concurrency_buffer=3, max_concurrency=10)
    assert decide(cfg, [], [], clock.now()).target == 3
    cfg = replace(cfg, min_concurrency=4)
    assert decide(cfg, [], [], clock.now()).target == 4


def test_buffer_perc_is_a_share_of_needed_runners_rounded_up(clock: FakeClock) -> None:
    cfg = replace(DEFAULT, concurrency_buffer_perc=50, max_concurrency=100)
    assert target_runners(cfg, 0) == 0
    assert target_runners(cfg, 1) == 2  # 1 + ceil(0.5)
    assert target_runners(cfg, 4) == 6  # 4 + 2
    assert target_runners(cfg, 5) == 8  # 5 + ceil(2.5)
    d = decide(cfg, [busy("a"), busy("b"), busy("c"), busy("d")], [], clock.now())
    assert d.start == 2


def test_buffer_is_the_larger_of_count_and_perc(clock: FakeClock) -> None:
    cfg = replace(DEFAULT, concurrency_buffer=3, concurrency_buffer_perc=10, max_concurrency=100)
    assert target_runners(cfg, 10) == 13  # perc gives 1, count gives 3
    cfg = replace(cfg, concurrency_buffer_perc=50)
    assert target_runners(cfg, 10) == 15  # perc gives 5


def test_buffer_runner_that_never_served_uses_keep_alive_not_ten_seconds(clock: FakeClock) -> None:
    cfg = replace(DEFAULT, concurrency_buffer=1, keep_alive=60, max_concurrency=5)
    runners = [
        idle("a", last=None, ready=clock.now(), served=False),
        idle("b", last=None, ready=clock.now(), served=False),
    ]
    clock.advance(30)
    assert decide(cfg, runners, [], clock.now()).stop == ()
    clock.advance(30)
    d = decide(cfg, runners, [], clock.now())
    assert len(d.stop) == 1
    assert d.stop[0].reason is StopReason.KEEP_ALIVE


# max_multiplexing


def test_max_multiplexing_packs_requests_per_runner(clock: FakeClock) -> None:
    cfg = replace(DEFAULT, max_multiplexing=4, max_concurrency=10)
    assert decide(cfg, [], waiting(4, clock.now()), clock.now()).start == 1
    assert decide(cfg, [], waiting(5, clock.now()), clock.now()).start == 2
    d = decide(cfg, [busy("a", 3)], waiting(1, clock.now()), clock.now())
    assert (d.demand, d.target, d.start) == (4, 1, 0)
    d = decide(cfg, [busy("a", 4)], waiting(1, clock.now()), clock.now())
    assert (d.target, d.start) == (2, 1)


def test_max_multiplexing_one_means_one_runner_per_request(clock: FakeClock) -> None:
    cfg = replace(DEFAULT, max_concurrency=10)
    assert decide(cfg, [], waiting(3, clock.now()), clock.now()).start == 3


# scaling_delay


def test_scaling_delay_holds_back_scale_up_until_the_request_waited(clock: FakeClock) -> None:
    cfg = replace(DEFAULT, scaling_delay=5, max_concurrency=5)
    queue = waiting(1, clock.now())
    d = decide(cfg, [], queue, clock.now())
    assert d.start == 0
    assert d.next_change == clock.now() + 5
    clock.advance(4.9)
    assert decide(cfg, [], queue, clock.now()).start == 0
    clock.advance(0.1)
    assert decide(cfg, [], queue, clock.now()).start == 1


def test_scaling_delay_counts_each_request_from_its_own_enqueue_time(clock: FakeClock) -> None:
    cfg = replace(DEFAULT, scaling_delay=2, max_concurrency=5)
    t0 = clock.now()
    queue = [WaitingRequest("old", t0), WaitingRequest("new", t0 + 1.5)]
    clock.advance(2)
    d = decide(cfg, [busy("a")], queue, clock.now())
    assert d.demand == 2  # the busy runner's request and "old"
    assert d.start == 1


def test_scaling_delay_zero_scales_at_once(clock: FakeClock) -> None:
    assert decide(DEFAULT, [], waiting(1, clock.now()), clock.now()).start == 1


# keep_alive


def test_keep_alive_stops_exactly_at_keep_alive_and_never_before(clock: FakeClock) -> None:
    cfg = replace(DEFAULT, keep_alive=30)
    runners = [idle("a", last=clock.now(), ready=clock.now() - 5)]
    for _ in range(29):
        clock.advance(1)
        assert decide(cfg, runners, [], clock.now()).stop == (), clock.now()
    clock.advance(0.999)
    assert decide(cfg, runners, [], clock.now()).stop == ()
    assert decide(cfg, runners, [], clock.now()).next_change == pytest.approx(clock.now() + 0.001)
    clock.advance(0.001)
    d = decide(cfg, runners, [], clock.now())
    assert [(s.runner, s.reason) for s in d.stop] == [("a", StopReason.KEEP_ALIVE)]


def test_keep_alive_counts_from_the_last_request_not_the_start(clock: FakeClock) -> None:
    cfg = replace(DEFAULT, keep_alive=10)
    runners = [idle("a", last=clock.now() + 100, ready=clock.now())]
    clock.advance(105)
    assert decide(cfg, runners, [], clock.now()).stop == ()
    clock.advance(5)
    assert len(decide(cfg, runners, [], clock.now()).stop) == 1


def test_keep_alive_never_stops_a_busy_runner(clock: FakeClock) -> None:
    cfg = replace(DEFAULT, keep_alive=1)
    runners = [RunnerView("a", S.RUNNING, in_flight=1, ready_at=0.0, last_request_at=0.0, ever_served=True)]
    clock.advance(10_000)
    assert decide(cfg, runners, [], clock.now()).stop == ()


def test_keep_alive_runner_kept_while_demand_needs_it(clock: FakeClock) -> None:
    cfg = replace(DEFAULT, keep_alive=1, max_concurrency=3)
    runners = [idle("a", last=clock.now()), busy("b")]
    clock.advance(5)
    # One request waits: "a" is needed for it even though its keep_alive ran out.
    d = decide(cfg, runners, waiting(1, clock.now()), clock.now())
    assert d.stop == ()
    d = decide(cfg, runners, [], clock.now())
    assert [s.runner for s in d.stop] == ["a"]


def test_keep_alive_zero_stops_idle_runner_at_once(clock: FakeClock) -> None:
    cfg = replace(DEFAULT, keep_alive=0)
    assert len(decide(cfg, [idle("a", last=clock.now())], [], clock.now()).stop) == 1


# the 10 s reap of runners that never served


def test_never_served_runner_is_reaped_after_ten_seconds_without_min_or_buffer(clock: FakeClock) -> None:
    cfg = replace(DEFAULT, keep_alive=300)
    runners = [idle("a", last=None, ready=clock.now(), served=False)]
    clock.advance(9.9)
    assert decide(cfg, runners, [], clock.now()).stop == ()
    clock.advance(0.1)
    d = decide(cfg, runners, [], clock.now())
    assert [(s.runner, s.reason) for s in d.stop] == [("a", StopReason.NEVER_SERVED)]


def test_never_served_counts_from_ready_not_from_start(clock: FakeClock) -> None:
    cfg = replace(DEFAULT, keep_alive=300)
    runner = RunnerView("a", S.IDLE, started_at=clock.now(), ready_at=clock.now() + 20)
    clock.advance(25)
    assert decide(cfg, [runner], [], clock.now()).stop == ()
    clock.advance(5)
    assert len(decide(cfg, [runner], [], clock.now()).stop) == 1


def test_never_served_with_min_concurrency_is_kept(clock: FakeClock) -> None:
    cfg = replace(DEFAULT, keep_alive=300, min_concurrency=1)
    runners = [idle("a", last=None, ready=clock.now(), served=False)]
    clock.advance(3600)
    assert decide(cfg, runners, [], clock.now()).stop == ()


def test_never_served_with_buffer_perc_uses_keep_alive(clock: FakeClock) -> None:
    cfg = replace(DEFAULT, keep_alive=60, concurrency_buffer_perc=50)
    runners = [idle("a", last=None, ready=clock.now(), served=False)]
    clock.advance(59)
    assert decide(cfg, runners, [], clock.now()).stop == ()
    clock.advance(1)
    (order,) = decide(cfg, runners, [], clock.now()).stop
    assert order.reason is StopReason.KEEP_ALIVE


def test_served_runner_uses_keep_alive_not_ten_seconds(clock: FakeClock) -> None:
    cfg = replace(DEFAULT, keep_alive=300)
    runners = [idle("a", last=clock.now())]
    clock.advance(11)
    assert decide(cfg, runners, [], clock.now()).stop == ()


def test_starting_runners_are_never_stopped(clock: FakeClock) -> None:
    runners = [RunnerView("a", S.SETUP, started_at=clock.now())]
    clock.advance(3600)
    assert decide(DEFAULT, runners, [], clock.now()).stop == ()


# back-off after failed starts


def test_backoff_grows_thirty_seconds_per_failure_capped_at_ten_minutes() -> None:
    assert [backoff_seconds(n) for n in (0, 1, 2, 3, 19, 20, 21, 100)] == [0, 30, 60, 90, 570, 600, 600, 600]


def test_backoff_holds_starts_until_it_passes(clock: FakeClock) -> None:
    queue = waiting(1, clock.now())
    failed_at = clock.now()
    d = decide(DEFAULT, [], queue, clock.now(), failures=2, last_failure_at=failed_at)
    assert d.start == 0
    assert d.backoff_until == failed_at + 60
    assert d.next_change == failed_at + 60
    clock.advance(59.9)
    assert decide(DEFAULT, [], queue, clock.now(), failures=2, last_failure_at=failed_at).start == 0
    clock.advance(0.1)
    d = decide(DEFAULT, [], queue, clock.now(), failures=2, last_failure_at=failed_at)
    assert d.start == 1
    assert d.backoff_until is None


def test_no_failures_no_backoff(clock: FakeClock) -> None:
    d = decide(DEFAULT, [], waiting(1, clock.now()), clock.now(), failures=0, last_failure_at=clock.now())
    assert d.start == 1


def test_draining_and_terminating_runners_are_not_capacity(clock: FakeClock) -> None:
    runners = [RunnerView("a", S.DRAINING, in_flight=1), RunnerView("b", S.TERMINATING)]
    d = decide(DEFAULT, runners, waiting(1, clock.now()), clock.now())
    assert d.live == 0
    assert d.start == 1
