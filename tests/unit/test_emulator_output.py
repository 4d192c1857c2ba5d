"""How `falemu up`, `ps` and `logs` render the emulator's events (falemu/cli/output.py)."""

from __future__ import annotations

import io
import json
from typing import Any

from falemu.cli.output import NO_OPENAPI_WARNING, Renderer
from falemu.events import (
    BuildOutput,
    BuildStep,
    Notice,
    RequestCompleted,
    RequestQueued,
    RequestStarted,
    RunnerFailed,
    RunnerLog,
    RunnerReady,
    RunnerStateChanged,
    RunnerStopped,
    ScaledUp,
)


def renderer(**kwargs: bool) -> tuple[Renderer, io.StringIO]:
    out = io.StringIO()
    return Renderer(stream=out, color=False, **kwargs), out


def test_runner_lines_are_prefixed_by_runner_id() -> None:
    r, out = renderer()
    r(RunnerLog("greeter", runner="greeter-1a2b", line="Uvicorn running"))
    r(RunnerStateChanged("greeter", runner="greeter-1a2b", state="IDLE"))
    r(RunnerStopped("greeter", runner="greeter-1a2b", reason="keep_alive"))
    assert out.getvalue().splitlines() == [
        "[greeter-1a2b] Uvicorn running",
        "[greeter-1a2b] IDLE",
        "[greeter-1a2b] stopped: idle for keep_alive seconds (keep_alive)",
    ]


def test_ready_line_shows_address_kind_and_timeline() -> None:
    r, out = renderer()
    r(RunnerReady("greeter", runner="g-1", address="http://127.0.0.1:4000", timeline={"create": 0.05, "start": 1.5}))
    assert out.getvalue().strip() == (
        "[g-1] ready at http://127.0.0.1:4000 in 1.6 s (cold start, a request was waiting: create 50 ms, start 1.5 s)"
    )


def test_build_progress_and_verbose_output() -> None:
    r, out = renderer()
    r(BuildStep("greeter", step=3, steps=7, text="COPY server.py /app/"))
    r(BuildOutput("greeter", line="hidden unless verbose"))
    assert out.getvalue().strip() == "greeter: step 3/7 COPY server.py /app/"
    rv, outv = renderer(verbose=True)
    rv(BuildOutput("greeter", line="shown"))
    assert "shown" in outv.getvalue()


def test_requests_in_flight_are_counted() -> None:
    r, out = renderer(verbose=True)  # every start line at once
    r(RequestStarted("greeter", request_id="a", runner="g-1"))
    r(RequestStarted("greeter", request_id="b", runner="g-1"))
    r(RequestCompleted("greeter", request_id="a", runner="g-1", status_code=200, seconds=0.012))
    lines = out.getvalue().splitlines()
    assert lines[0].endswith("(1 in flight)")
    assert lines[1].endswith("(2 in flight)")
    assert lines[2] == "greeter: request a 200 in 12 ms (1 in flight)"
    # A request no runner took (its caller hung up while it waited) was never in flight.
    r(RequestCompleted("greeter", request_id="c", runner="", status_code=499, seconds=0.0))
    assert out.getvalue().splitlines()[3] == "greeter: request c (no runner) 499 in 0 ms (1 in flight)"


def test_a_retried_queue_request_is_one_request_in_flight() -> None:
    # fal's queue retries a request whose runner answered 503 on a fresh runner: a start per attempt, one end.
    r, out = renderer(verbose=True)
    r(RequestStarted("wsgi", request_id="q", runner="w-1", mode="queue"))
    r(RequestQueued("wsgi", request_id="q", queue_position=0))  # queued again for its retry
    r(RequestStarted("wsgi", request_id="q", runner="w-2", mode="queue"))
    r(RequestStarted("wsgi", request_id="q", runner="w-3", mode="queue"))  # a retry without a queued event
    r(RequestStarted("wsgi", request_id="other", runner="w-3", mode="queue"))
    r(RequestCompleted("wsgi", request_id="q", runner="w-3", status_code=503, seconds=0.005, mode="queue"))
    lines = out.getvalue().splitlines()
    assert [line.rsplit("(", 1)[1] for line in lines if "->" in line or " in " in line][-2:] == [
        "2 in flight)",
        "1 in flight)",
    ]
    assert lines[-1] == "wsgi: request q 503 in 5 ms (1 in flight)"


def test_failures_show_their_logs_and_notices_their_level() -> None:
    r, out = renderer()
    r(RunnerFailed("greeter", runner="g-1", error_type="startup_timeout", message="not ready", logs="boom\nbang"))
    r(Notice("greeter", level="warning", message="no GPU"))
    r(ScaledUp("greeter", runners=2, target=2))
    assert out.getvalue().splitlines() == [
        "[g-1] failed (startup_timeout): not ready",
        "[g-1] | boom",
        "[g-1] | bang",
        "warning: greeter: no GPU",
        "greeter: scaling up, 2 runner(s) (target 2)",
    ]


def test_json_mode_prints_every_event_as_one_json_line() -> None:
    r, out = renderer(json_lines=True)
    r(RunnerStateChanged("greeter", runner="g-1", state="PENDING"))
    r(BuildOutput("greeter", line="even build output"))
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["event"] for line in lines] == ["RunnerStateChanged", "BuildOutput"]
    assert lines[0]["runner"] == "g-1"
    assert lines[0]["state"] == "PENDING"


def test_serving_lists_sync_and_async_urls_per_endpoint() -> None:
    r, out = renderer()
    r.serving(
        app="greeter",
        url="http://h/local/greeter",
        queue_url="http://h/queue/local/greeter",
        auth="public",
        endpoints=["/greet"],
        runners=[
            {"id": "g-1", "url": "http://127.0.0.1:1", "state": "IDLE"},
            {"id": "g-2", "url": None, "state": "SETUP"},  # a second runner still starting has no address yet
        ],
    )
    text = out.getvalue()
    assert "Sync   http://h/local/greeter/greet" in text
    assert "Async  http://h/queue/local/greeter/greet" in text
    assert "runner g-1 at http://127.0.0.1:1 (IDLE)" in text
    assert "runner g-2 (SETUP)" in text
    assert "None" not in text
    assert "Playground" not in text


def test_serving_without_openapi_warns_as_fal_does() -> None:
    r, out = renderer()
    r.serving(app="srv", url="u", queue_url="q", auth="private", endpoints=None, runners=[])
    assert NO_OPENAPI_WARNING.format(app="srv") in out.getvalue()
    assert "Playground and the endpoint listing will not be available" in out.getvalue()


def test_ps_table() -> None:
    r, out = renderer()
    r.ps(
        [
            {
                "pid": 42,
                "url": "http://h",
                "project": "/p",
                "apps": [
                    {
                        "name": "greeter",
                        "url": "http://h/local/greeter",
                        "stats": {"cold_starts": 1, "peak_runners": 1},
                        "waiting": 0,
                        "runners": [
                            {"id": "g-1", "state": "IDLE", "in_flight": 0, "served": 3, "age": 2.5, "url": "http://r"}
                        ],
                    }
                ],
            }
        ]
    )
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("falemu up (pid 42) at http://h")
    assert lines[-2].split() == ["APP", "RUNNER", "REV", "STATE", "IN", "FLIGHT", "SERVED", "AGE", "ADDRESS"]
    assert lines[-1].split() == ["greeter", "g-1", "r1", "IDLE", "0", "3", "2.5", "s", "http://r"]
    r2, out2 = renderer()
    r2.ps([])
    assert out2.getvalue().strip() == "no falemu up is running"


class _CountingStream(io.StringIO):
    """A file-like stream (not a terminal) that counts its flushes."""

    flushes = 0

    def flush(self) -> None:
        self.flushes += 1
        super().flush()


def test_lines_to_a_file_or_pipe_are_flushed_in_batches_yet_soon() -> None:
    from gateway_support import wait_for

    for json_lines in (True, False):
        out = _CountingStream()
        r = Renderer(stream=out, json_lines=json_lines)
        for i in range(1000):
            r(RunnerLog("greeter", runner="g-1", line=f"GET /health {i}"))
        wait_for(lambda out=out: out.flushes >= 1)  # a quiet reader still gets the last line promptly
        lines = out.getvalue().splitlines()
        assert len(lines) == 1000
        assert "\x1b[" not in out.getvalue()  # no colour codes in a file
        assert out.flushes < 100  # not one system call per line
        r.flush()


def test_lifecycle_lines_reach_a_pipe_at_once() -> None:
    for json_lines in (True, False):
        out = _CountingStream()
        r = Renderer(stream=out, json_lines=json_lines)
        r(RunnerLog("greeter", runner="g-1", line="GET /health"))  # batched: the output thread flushes it
        r.status("Ready", "gateway at http://127.0.0.1:1", url="http://127.0.0.1:1")
        assert out.flushes >= 1  # before status() returned, with the lines before it
        assert "Ready" in out.getvalue().splitlines()[-1] or "gateway at" in out.getvalue().splitlines()[-1]
        assert "GET /health" in out.getvalue()


def test_a_failing_event_subscriber_never_fails_the_emitter(capsys: Any) -> None:
    from falemu.events import EventBus

    bus = EventBus()
    calls: list[str] = []
    seen: list[Notice] = []

    def gone(event: Any) -> None:
        calls.append("gone")
        raise BrokenPipeError("reader gone")

    def buggy(event: Any) -> None:
        calls.append("buggy")
        raise KeyError("oops")

    bus.subscribe(gone)
    bus.subscribe(buggy)
    bus.subscribe(seen.append)
    first, second = Notice("a", level="info", message="1"), Notice("a", level="info", message="2")
    bus(first)  # no exception reaches the emitter
    bus(second)
    assert seen == [first, second]
    assert calls == ["gone", "buggy", "buggy"]  # a closed output is dropped; a bug is reported, kept
    err = capsys.readouterr().err
    assert err.count("gets no more events") == 1
    assert err.count("KeyError") == 1
    assert bus.history == [first, second]


def test_a_subscriber_may_take_only_some_kinds_of_events() -> None:
    from falemu.events import Event, EventBus, RequestCompleted, RequestStarted

    class Special(Notice):
        pass

    bus = EventBus()
    notices: list[Event] = []
    everything: list[Event] = []
    stop = bus.subscribe(notices.append, kinds=[Notice])
    bus.subscribe(everything.append)
    note = Notice("a", level="info", message="m")
    started = RequestStarted("a", request_id="r1", runner="a-0")
    special = Special("a", level="warning", message="s")
    for event in (note, started, special):
        bus(event)
    assert notices == [note, special]  # a subclass of a kind it takes, too
    assert everything == [note, started, special]
    late: list[Event] = []
    bus.subscribe(late.append, kinds=(RequestStarted, RequestCompleted))  # routes change with subscriptions
    stop()
    bus(note)
    bus(started)
    assert notices == [note, special]
    assert late == [started]
    assert everything[-2:] == [note, started]
