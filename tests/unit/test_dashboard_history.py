"""The request history's bounds and its cheap reads: capacity, body cap and budget, the last hour's
counts, the newest page and paging, and the journal the gateway's calls go through."""

from __future__ import annotations

import gc
import re
import threading
from importlib import resources
from pathlib import Path

from falemu.config.model import AppConfig, AppShape, ScalingConfig
from falemu.dashboard import YOUNG_GENERATION, roomy_young_generation, views
from falemu.dashboard.history import History
from falemu.dashboard.pricing import load_prices
from falemu.events import EventBus, RequestCompleted, RequestQueued, RequestStarted, RunnerStateChanged

JSON = [(b"content-type", b"application/json")]


def sync_request(
    history: History, rid: str, at: float, status: int = 200, body: bytes = b'{"a": 1}', app: str = "app"
) -> None:
    """What the gateway hands the history for one sync request, in its order."""
    history(RequestStarted(app, request_id=rid, runner="r1", endpoint="/run", method="POST", ts=at))
    history.request_body(rid, JSON, body, True)
    history.response_body(rid, JSON, b'{"ok": true}')
    history(
        RequestCompleted(
            app, request_id=rid, runner="r1", status_code=status, seconds=0.01, endpoint="/run", ts=at + 0.01
        )
    )


def board(history: History) -> views.Board:
    config = AppConfig(
        name="app", alias="app", shape=AppShape.DIRECT_SERVER, project_root=Path("."), scaling=ScalingConfig()
    )
    return views.Board(apps={"app": config}, pools=lambda alias: None, history=history, prices=load_prices(None))


def test_capacity_keeps_the_newest_and_reads_see_every_call_at_once() -> None:
    history = History(capacity=50, clock=lambda: 1000.0)
    for i in range(120):
        sync_request(history, f"r{i}", 900.0 + i)
    # far fewer calls than a journal batch: a reader still sees all of them
    assert len(history) == 50
    assert history.request("r69") is None
    newest = history.latest(3)
    assert [r.id for r in newest] == ["r119", "r118", "r117"]
    assert [r.seq for r in newest] == [120, 119, 118]
    rec = history.request("r70")
    assert rec is not None
    assert (rec.state, rec.status, rec.input.data if rec.input else None) == ("done", 200, b'{"a": 1}')
    assert rec.output is not None
    assert rec.output.content_type == "application/json"
    assert [r.id for r in history.requests()][:2] == ["r70", "r71"]


def test_bodies_are_capped_and_the_budget_takes_the_oldest_first() -> None:
    history = History(body_cap=100, body_budget=1000)
    big = b"x" * 250
    for i in range(40):
        sync_request(history, f"r{i}", 100.0 + i, body=big)
    first = history.request("r0")
    assert first is not None
    assert first.input is None
    assert first.output is None
    assert first.bodies_dropped
    last = history.request("r39")
    assert last is not None
    assert last.input is not None
    assert (len(last.input.data), last.input.size, last.input.truncated) == (100, 250, True)
    assert history.body_bytes <= 1000
    kept = [r.id for r in history.requests() if r.input is not None]
    assert kept == [f"r{i}" for i in range(40 - len(kept), 40)]  # the newest, without a gap
    # a late answer for a request whose bodies the budget already took is not kept either
    history.response_body("r1", JSON, b"late")
    rec = history.request("r1")
    assert rec is not None
    assert rec.output is None
    assert history.body_bytes <= 1000


def test_store_io_zero_and_bodies_before_their_event() -> None:
    history = History()
    history.request_body("early", JSON, b'{"first": true}', True)  # the body came first
    history(RequestQueued("app", request_id="early", queue_position=0, endpoint="/q", ts=5.0))
    history.request_body("private", JSON, b"secret", False)
    history(RequestStarted("app", request_id="private", runner="r1", endpoint="/p", ts=6.0))
    history.response_body("private", JSON, b"answer")
    early, private = history.request("early"), history.request("private")
    assert early is not None
    assert early.input is not None
    assert early.input.data == b'{"first": true}'
    assert early.mode == "queue"
    assert early.state == "queued"
    assert private is not None
    assert not private.store_io
    assert private.input is None
    assert private.output is None


def test_streamed_answers_grow_up_to_the_cap() -> None:
    history = History(body_cap=10)
    history(RequestStarted("app", request_id="s", runner="r1", endpoint="/stream", ts=1.0))
    history.response_body("s", [(b"content-type", b"text/event-stream")], b"")
    for chunk in (b"data: 1\n\n", b"data: 2\n\n", b"data: 3\n\n"):
        history.response_body("s", [], chunk)
    rec = history.request("s")
    assert rec is not None
    assert rec.output is not None
    assert (rec.output.data, rec.output.size, rec.output.content_type) == (b"data: 1\n\nd", 27, "text/event-stream")


def test_last_hour_counts_come_from_counters_not_the_history() -> None:
    now = 10_000.0
    history = History(capacity=5, clock=lambda: now)
    sync_request(history, "old", now - 4000)  # over an hour ago
    for i in range(8):
        sync_request(history, f"ok{i}", now - 100 + i)
    sync_request(history, "bad", now - 10, status=500)
    sync_request(history, "gone", now - 5, status=404)
    assert len(history) == 5  # most were let go ...
    assert history.recent("app", now - 3600) == (10, 8)  # ... but the last hour counts every one
    assert history.recent("other", now - 3600) == (0, 0)
    summary = views.overview(board(history))["apps"][0]
    assert summary["requests_last_hour"] in (0, 10)  # the overview uses the wall clock
    buckets, seconds = history.counters.latency("app")
    assert sum(buckets) == 11
    assert seconds > 0


def test_paging_lists_every_request_once_newest_first() -> None:
    history = History()
    for i in range(250):
        sync_request(history, f"r{i:03d}", 1000.0 + i, status=500 if i % 10 == 0 else 200)
    b = board(history)
    seen: list[str] = []
    page = views.request_list(b, limit=100)
    assert (page["matched"], page["kept"]) == (250, 250)
    while page["requests"]:
        seen += [r["id"] for r in page["requests"]]
        page = views.request_list(b, limit=100, older_than=page["requests"][-1]["seq"])
    assert seen == [f"r{i:03d}" for i in reversed(range(250))]
    second = views.request_list(b, limit=100, older_than=150 + 1)  # rows recorded before the 151st
    assert second["matched"] == 150
    assert second["requests"][0]["id"] == "r149"
    errors = views.request_list(b, status="5xx", limit=10)
    assert errors["matched"] == 25
    assert all(r["status"] == 500 for r in errors["requests"])
    older_errors = views.request_list(b, status="5xx", limit=10, older_than=errors["requests"][-1]["seq"])
    assert [r["id"] for r in older_errors["requests"]] == [f"r{i:03d}" for i in range(140, 40, -10)]
    assert older_errors["matched"] == 15


def test_unread_requests_are_counted_and_let_go_and_a_read_from_any_thread_sees_the_rest() -> None:
    history = History(capacity=20)  # the journal holds 60 entries unread, then lets the oldest go
    start = history.version
    history(RequestStarted("app", request_id="long", runner="r1", endpoint="/run", ts=0.5))
    history.request_body("long", JSON, b'{"long": 1}', True)
    running = history.request("long")
    assert running is not None
    assert running.state == "running"
    history(RequestCompleted("app", request_id="long", runner="r1", status_code=200, seconds=300.0, ts=300.5))
    for i in range(150):  # the end above is let go with the oldest, yet reaches the record read before
        sync_request(history, f"r{i}", 1.0 + i, status=500 if i % 4 == 0 else 200)
    assert history.version - start == 2 + 2 * 150  # every event counts: applied, let go or waiting
    assert len(history._inputs) <= 60  # the bodies of requests let go went with them
    seen: list[list[tuple[str, int]]] = []
    reader = threading.Thread(target=lambda: seen.append([(r.id, r.seq) for r in history.requests()]))
    reader.start()
    reader.join()
    assert seen == [[(f"r{i}", i + 2) for i in range(130, 150)]]  # the newest 20, numbered as they came
    assert history.version - start == 2 + 2 * 150
    newest = history.request("r149")
    assert newest is not None
    assert newest.input is not None
    assert newest.input.data == b'{"a": 1}'
    assert history.body_bytes == 20 * len(b'{"a": 1}{"ok": true}')
    assert history.recent("app", 0.0) == (151, 113)  # all counted, those let go too
    buckets, seconds = history.counters.latency("app")
    assert sum(buckets) == 151
    assert abs(seconds - (300.0 + 150 * 0.01)) < 1e-6


def test_the_page_preloads_every_module() -> None:
    static = resources.files("falemu.dashboard").joinpath("static")
    index = static.joinpath("index.html").read_text()
    preloaded = set(re.findall(r'rel="modulepreload" href="/_falemu/dashboard/([^"]+)"', index))
    modules = {
        f"{folder}/{node.name}"
        for folder in ("lib", "pages", "vendor")
        for node in static.joinpath(folder).iterdir()
        if node.name.endswith((".js", ".mjs"))
    }
    assert preloaded == modules


def test_a_followed_bus_records_retries_streams_and_unserved_requests_as_they_happened() -> None:
    bus = EventBus()
    history = History(body_cap=8)
    stop = history.follow(bus)
    q = "q1"
    bus(RequestQueued("app", request_id=q, queue_position=0, endpoint="/job", ts=100.0))
    history.request_body(q, JSON, b'{"n": 1}', True)
    bus(RunnerStateChanged("app", runner="r1", state="PENDING", ts=100.5))
    bus(RunnerStateChanged("app", runner="r1", state="IDLE", ts=101.0))
    bus(RequestStarted("app", request_id=q, runner="r1", endpoint="/job", method="POST", mode="queue", ts=102.0))
    bus(RequestQueued("app", request_id=q, queue_position=0, endpoint="/job", ts=103.0))  # a retry
    assert history.request(q) is not None  # read in flight: built now, later events still apply
    bus(RequestStarted("app", request_id=q, runner="r1", endpoint="/job", method="POST", mode="queue", ts=104.0))
    history.response_body(q, JSON, b'{"done": true}')
    bus(RequestCompleted("app", request_id=q, runner="r1", status_code=200, seconds=1.0, mode="queue", ts=105.0))
    s = "s1"  # a streamed answer, never read until it ended
    bus(RequestStarted("app", request_id=s, runner="r1", endpoint="/stream", method="GET", ts=106.0))
    history.request_body(s, [], b"", True)
    history.response_body(s, [(b"content-type", b"text/event-stream")], b"")
    for chunk in (b"data: 1\n\n", b"data: 2\n\n"):
        history.response_body(s, [], chunk)
    bus(RequestCompleted("app", request_id=s, runner="r1", status_code=200, seconds=0.5, ts=106.5))
    bus(RequestCompleted("app", request_id="u1", runner="", status_code=503, seconds=0.0, queue_wait=2.0, ts=110.0))
    stop()
    bus(RequestStarted("app", request_id="late", runner="r1", ts=111.0))  # no longer followed
    job, stream, unserved = history.request(q), history.request(s), history.request("u1")
    assert job is not None
    assert stream is not None
    assert unserved is not None
    assert (job.mode, job.attempts, job.started_at, job.received_at, job.finished_at) == (
        "queue",
        2,
        104.0,
        100.0,
        105.0,
    )
    assert (job.queue_wait, job.execution, job.status, job.state) == (4.0, 1.0, 200, "done")
    assert job.input is not None
    assert job.input.data == b'{"n": 1}'
    assert job.output is not None
    assert (job.output.data, job.output.size) == (b'{"done":', 14)
    assert stream.output is not None
    assert (stream.output.data, stream.output.size, stream.output.content_type) == (
        b"data: 1\n",
        18,
        "text/event-stream",
    )
    assert (unserved.runner, unserved.received_at, unserved.queue_wait, unserved.status) == ("", 108.0, 2.0, 503)
    assert history.request("late") is None
    assert [r.seq for r in history.requests()] == [1, 2, 3]
    runner = history.runner("r1")
    assert runner is not None
    assert [s for s, _ in runner.states] == ["PENDING", "IDLE"]
    assert history.recent("app", 0.0) == (3, 2)
    buckets, seconds = history.counters.latency("app")
    assert sum(buckets) == 3
    assert abs(seconds - (5.0 + 0.5 + 2.0)) < 1e-9


def test_the_collector_looks_at_new_objects_less_often_with_a_history_but_keeps_a_setting_given() -> None:
    before = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)
        roomy_young_generation()
        assert gc.get_threshold() == (YOUNG_GENERATION, 10, 10)
        gc.set_threshold(100_000, 5, 5)  # larger already
        roomy_young_generation()
        assert gc.get_threshold() == (100_000, 5, 5)
        gc.set_threshold(0, 10, 10)  # off
        roomy_young_generation()
        assert gc.get_threshold() == (0, 10, 10)
    finally:
        gc.set_threshold(*before)
