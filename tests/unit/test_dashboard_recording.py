"""What the gateway records for the dashboard: both sync paths and the queue alike."""

from __future__ import annotations

import json

import httpx
from gateway_support import app_config, wait_for

from falemu.dashboard.history import AppInfo, History
from falemu.events import RequestCompleted, RequestStarted
from falemu.gateway.harness import GatewayHarness


def recorded(harness: GatewayHarness) -> History:
    history = History({"echo": AppInfo("GPU-H100", 1)}, body_cap=64)
    harness.events.subscribe(history)
    return history


def test_sync_paths_record_endpoint_method_bodies_and_status_alike(
    harness: GatewayHarness, client: httpx.Client
) -> None:
    url = harness.serve([app_config("echo")])
    history = recorded(harness)
    assert harness.app is not None
    harness.app.recorder = history
    resp = client.post(f"{url}/local/echo/thing?x=1", json={"name": "fal"})
    rid = resp.headers["x-fal-request-id"]
    wait_for(lambda: history.request(rid) is not None and history.request(rid).state == "done")  # type: ignore[union-attr]
    rec = history.request(rid)
    assert rec is not None
    assert (rec.app, rec.endpoint, rec.method, rec.mode, rec.status, rec.runner) == (
        "echo", "/thing", "POST", "sync", 200, "echo-0",
    )  # fmt: skip
    assert rec.input is not None
    assert json.loads(rec.input.data) == {"name": "fal"}
    assert rec.input.content_type == "application/json"
    assert rec.output is not None
    assert rec.output.size == len(resp.content)
    assert rec.output.data == resp.content[:64]
    assert rec.output.truncated
    done = next(e for e in harness.events_of(RequestCompleted) if e.request_id == rid)
    started = next(e for e in harness.events_of(RequestStarted) if e.request_id == rid)
    assert (done.endpoint, done.method, done.mode, done.error_type) == ("/thing", "POST", "sync", None)
    assert (started.endpoint, started.method) == ("/thing", "POST")


def test_store_io_zero_keeps_bodies_out(harness: GatewayHarness, client: httpx.Client) -> None:
    url = harness.serve([app_config("echo")])
    history = recorded(harness)
    assert harness.app is not None
    harness.app.recorder = history
    resp = client.post(f"{url}/local/echo/x", json={"secret": 1}, headers={"x-fal-store-io": "0"})
    rid = resp.headers["x-fal-request-id"]
    wait_for(lambda: history.request(rid) is not None and history.request(rid).state == "done")  # type: ignore[union-attr]
    rec = history.request(rid)
    assert rec is not None
    assert rec.status == 200
    assert rec.input is None
    assert rec.output is None
    assert not rec.store_io
    # the header is the platform's: the runner never sees it
    assert "x-fal-store-io" not in resp.json()["headers"]


def test_runner_errors_and_streams_are_recorded(harness: GatewayHarness, client: httpx.Client) -> None:
    url = harness.serve([app_config("echo")])
    history = recorded(harness)
    assert harness.app is not None
    harness.app.recorder = history
    failed = client.get(f"{url}/local/echo/status/500")
    rid = failed.headers["x-fal-request-id"]
    wait_for(lambda: history.request(rid) is not None and history.request(rid).state == "done")  # type: ignore[union-attr]
    rec = history.request(rid)
    assert rec is not None
    assert rec.status == 500
    assert rec.output is not None
    assert json.loads(rec.output.data)["detail"] == "status 500"
    streamed = client.get(f"{url}/local/echo/stream?n=3")
    sid = streamed.headers["x-fal-request-id"]
    wait_for(lambda: history.request(sid) is not None and history.request(sid).state == "done")  # type: ignore[union-attr]
    out = history.request(sid).output  # type: ignore[union-attr]
    assert out is not None
    assert out.size == len(streamed.content)


def test_queue_records_input_output_and_queue_wait(harness: GatewayHarness, client: httpx.Client) -> None:
    url = harness.serve([app_config("echo")])
    history = recorded(harness)
    assert harness.app is not None
    harness.app.recorder = history
    submitted = client.post(f"{url}/queue/local/echo/job", json={"n": 7}).json()
    rid = submitted["request_id"]
    wait_for(lambda: history.request(rid) is not None and history.request(rid).state == "done")  # type: ignore[union-attr]
    rec = history.request(rid)
    assert rec is not None
    assert (rec.mode, rec.endpoint, rec.method, rec.status, rec.attempts) == ("queue", "/job", "POST", 200, 1)
    assert rec.queue_wait is not None
    assert rec.queue_wait >= 0
    assert rec.execution is not None
    assert rec.input is not None
    assert json.loads(rec.input.data) == {"n": 7}
    result = client.get(f"{url}/queue/local/echo/requests/{rid}")
    assert rec.output is not None
    assert rec.output.data == result.content[:64]
