"""fal's queue API on the gateway: submit, status shapes, result, cancel, retries, webhooks, SSE.

The harness of test_gateway: probe runners on loopback behind a StaticPool, httpx as the caller.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from gateway_support import app_config, wait_for

from falemu.events import RequestQueued
from falemu.gateway.harness import GatewayHarness
from falemu.gateway.keys import KeyStore
from falemu.gateway.probe import Probe
from falemu.gateway.serve import ThreadedServer

Q = "/queue/local"


def submit(client: httpx.Client, url: str, path: str, body: Any = None, **kw: Any) -> dict[str, Any]:
    resp = client.post(f"{url}{Q}/{path}", json=body if body is not None else {}, **kw)
    assert resp.status_code == 200, resp.text
    data: dict[str, Any] = resp.json()
    return data


def status(client: httpx.Client, data: dict[str, Any], logs: str | None = None) -> httpx.Response:
    params = {"logs": logs} if logs is not None else {}
    return client.get(data["status_url"], params=params)


def completed(client: httpx.Client, data: dict[str, Any]) -> dict[str, Any]:
    holder: dict[str, Any] = {}

    def done() -> bool:
        resp = status(client, data, "1")
        holder["body"] = resp.json()
        holder["code"] = resp.status_code
        return bool(resp.json()["status"] == "COMPLETED")

    wait_for(done)
    assert holder["code"] == 200
    return dict(holder["body"])


def test_submit_returns_fal_shaped_body(harness: GatewayHarness, client: httpx.Client) -> None:
    url = harness.serve([app_config("echo")])
    resp = client.post(f"{url}{Q}/echo", json={"a": 1})
    assert resp.status_code == 200
    data = resp.json()
    rid = data["request_id"]
    assert resp.headers["x-fal-request-id"] == rid
    assert data["status"] == "IN_QUEUE"
    assert data["gateway_request_id"] == rid
    assert isinstance(data["queue_position"], int)
    base = f"{url}{Q}/echo/requests/{rid}"
    assert data["response_url"] == base
    assert data["status_url"] == base + "/status"
    assert data["cancel_url"] == base + "/cancel"


def test_status_shapes_through_a_request_lifetime(harness: GatewayHarness, client: httpx.Client) -> None:
    url = harness.serve([app_config("echo")])  # one runner, max_multiplexing 1
    first = submit(client, url, "echo/slow?s=30")
    wait_for(lambda: status(client, first).json()["status"] == "IN_PROGRESS")
    second = submit(client, url, "echo/log", None)
    third = submit(client, url, "echo/")

    queued = status(client, third)
    assert queued.status_code == 202
    assert queued.json()["status"] == "IN_QUEUE"
    assert queued.json()["queue_position"] == 1
    assert status(client, second).json()["queue_position"] == 0
    assert queued.json()["response_url"] == third["response_url"]

    running = status(client, first, "true")
    assert running.status_code == 202
    assert running.json()["status"] == "IN_PROGRESS"
    assert isinstance(running.json()["logs"], list)
    assert status(client, first, "false").json()["logs"] is None

    assert client.put(first["cancel_url"]).status_code == 202
    done = completed(client, first)
    assert done["status"] == "COMPLETED"
    assert isinstance(done["metrics"]["inference_time"], float)
    assert done["error_type"] == "client_cancelled"  # the runner answered 499
    assert completed(client, third)["metrics"]["inference_time"] >= 0


@pytest.mark.parametrize(("spelling", "expect_list"), [("true", True), ("1", True), ("false", False), ("0", False)])
def test_logs_param_spellings(harness: GatewayHarness, client: httpx.Client, spelling: str, expect_list: bool) -> None:
    url = harness.serve([app_config("echo")])
    data = submit(client, url, "echo/")
    completed(client, data)
    body = status(client, data, spelling).json()
    assert isinstance(body["logs"], list) is expect_list
    assert client.get(data["status_url"]).json()["logs"] is None


def test_runner_log_lines_land_in_the_request_logs(harness: GatewayHarness, client: httpx.Client) -> None:
    url = harness.serve([app_config("echo")])
    resp = client.post(f"{url}{Q}/echo/log", content=b"loading weights\nstep 1 of 2\n")
    data = resp.json()
    done = completed(client, data)
    wait_for(lambda: len(status(client, data, "1").json()["logs"]) >= 2)
    logs = status(client, data, "1").json()["logs"]
    assert [entry["message"] for entry in logs] == ["loading weights", "step 1 of 2"]
    entry = logs[0]
    assert set(entry) == {"timestamp", "message", "level", "source", "labels"}
    assert entry["level"] == "STDOUT"
    assert entry["source"] == "USER"
    assert "T" in entry["timestamp"]
    assert "error" not in done


def test_result_is_the_runners_response(harness: GatewayHarness, client: httpx.Client) -> None:
    url = harness.serve([app_config("echo")])
    data = submit(client, url, "echo/generate", {"prompt": "cat"})
    completed(client, data)
    result = client.get(data["response_url"])
    assert result.status_code == 200
    assert result.headers["x-fal-request-id"] == data["request_id"]
    seen = result.json()
    assert seen["path"] == "/generate"
    assert json.loads(seen["body"]) == {"prompt": "cat"}
    assert seen["headers"]["x-fal-request-id"] == data["request_id"]
    assert seen["headers"]["x-fal-endpoint"] == "local/echo/generate"


def test_failed_request_result_keeps_the_runners_code_and_status_reports_error(
    harness: GatewayHarness, client: httpx.Client
) -> None:
    url = harness.serve([app_config("echo")])
    data = submit(client, url, "echo/status/422")
    done = completed(client, data)
    assert done["error"] == "status 422"
    result = client.get(data["response_url"])
    assert result.status_code == 422
    assert result.json()["detail"] == "status 422"


def test_result_before_completion_unknown_id_and_wrong_app(harness: GatewayHarness, client: httpx.Client) -> None:
    url = harness.serve([app_config("echo"), app_config("other")])
    data = submit(client, url, "echo/slow?s=30")
    wait_for(lambda: status(client, data).json()["status"] == "IN_PROGRESS")
    pending = client.get(data["response_url"])
    assert pending.status_code == 400
    assert pending.json()["detail"] == "Request is still in progress"
    assert client.get(f"{url}{Q}/echo/requests/nope").status_code == 404
    assert client.get(f"{url}{Q}/echo/requests/nope/status").status_code == 404
    rid = data["request_id"]
    assert client.get(f"{url}{Q}/other/requests/{rid}/status").status_code == 404
    client.put(data["cancel_url"])


def test_status_and_result_drop_the_subpath_and_accept_trailing_slashes(
    harness: GatewayHarness, client: httpx.Client
) -> None:
    url = harness.serve([app_config("echo")])
    data = submit(client, url, "echo/deep/sub/path/")
    rid = data["request_id"]
    assert data["status_url"] == f"{url}{Q}/echo/requests/{rid}/status"
    completed(client, data)
    assert client.get(f"{url}{Q}/echo/requests/{rid}/status/", params={"logs": "1"}).status_code == 200
    result = client.get(f"{url}{Q}/echo/requests/{rid}/")
    assert result.json()["path"] == "/deep/sub/path/"
    assert client.put(f"{url}{Q}/echo/requests/{rid}/cancel/").json() == {"status": "ALREADY_COMPLETED"}
    assert client.post(f"{url}{Q}/echo/", json={}).status_code == 200


def test_cancel_queued_in_progress_completed_and_unknown(harness: GatewayHarness, client: httpx.Client) -> None:
    url = harness.serve([app_config("echo")])
    running = submit(client, url, "echo/slow?s=30")
    wait_for(lambda: status(client, running).json()["status"] == "IN_PROGRESS")
    queued = submit(client, url, "echo/never")

    resp = client.put(queued["cancel_url"])
    assert (resp.status_code, resp.json()) == (202, {"status": "CANCELLATION_REQUESTED"})
    gone = completed(client, queued)
    assert gone["error_type"] == "client_cancelled"
    assert client.get(queued["response_url"]).status_code == 499

    resp = client.put(running["cancel_url"])
    assert (resp.status_code, resp.json()) == (202, {"status": "CANCELLATION_REQUESTED"})
    completed(client, running)
    assert client.get(running["response_url"]).status_code == 499  # the app's answer to its cancel
    probe = harness.probes["echo-0"]
    cancels = [c for c in probe.calls if c["path"] == "/slow/cancel"]
    assert len(cancels) == 1
    assert cancels[0]["method"] == "POST"
    assert cancels[0]["headers"]["x-fal-request-id"] == running["request_id"]
    assert not [c for c in probe.calls if c["path"] == "/never"]  # the cancelled queued request never ran

    resp = client.put(running["cancel_url"])
    assert (resp.status_code, resp.json()) == (400, {"status": "ALREADY_COMPLETED"})
    resp = client.put(f"{url}{Q}/echo/requests/nope/cancel")
    assert (resp.status_code, resp.json()) == (404, {"status": "NOT_FOUND"})


def test_queue_runs_requests_in_arrival_order(harness: GatewayHarness, client: httpx.Client) -> None:
    url = harness.serve([app_config("echo")])
    blocker = submit(client, url, "echo/slow?s=30")
    wait_for(lambda: status(client, blocker).json()["status"] == "IN_PROGRESS")
    ids = [submit(client, url, f"echo/item-{i}")["request_id"] for i in range(6)]
    positions = [e.queue_position for e in harness.events_of(RequestQueued) if e.request_id in ids]
    assert positions == [0, 1, 2, 3, 4, 5]
    client.put(blocker["cancel_url"])
    wait_for(lambda: len(harness.pools["echo"].acquired) == 7)
    assert [rid for rid, _ in harness.pools["echo"].acquired[1:]] == ids


def test_low_priority_waits_for_normal_ones(harness: GatewayHarness, client: httpx.Client) -> None:
    url = harness.serve([app_config("echo")])
    blocker = submit(client, url, "echo/slow?s=30")
    wait_for(lambda: status(client, blocker).json()["status"] == "IN_PROGRESS")
    low = submit(client, url, "echo/low", headers={"X-Fal-Queue-Priority": "low"})["request_id"]
    normal = submit(client, url, "echo/normal")["request_id"]
    client.put(blocker["cancel_url"])
    wait_for(lambda: len(harness.pools["echo"].acquired) == 3)
    assert [rid for rid, _ in harness.pools["echo"].acquired[1:]] == [normal, low]


def test_low_priority_keeps_its_start_deadline_while_normal_ones_wait(
    harness: GatewayHarness, client: httpx.Client
) -> None:
    url = harness.serve([app_config("echo")])
    blocker = submit(client, url, "echo/slow?s=30")
    wait_for(lambda: status(client, blocker).json()["status"] == "IN_PROGRESS")
    normal = submit(client, url, "echo/normal")  # waits behind the blocker for up to 30 s
    headers = {"X-Fal-Queue-Priority": "low", "X-Fal-Request-Timeout": "2"}
    low = submit(client, url, "echo/low", headers=headers)
    done = completed(client, low)  # long before the normal request gets its turn
    assert done["error_type"] == "request_timeout"
    assert client.get(low["response_url"]).status_code == 504
    assert status(client, normal).json()["status"] == "IN_QUEUE"
    client.put(blocker["cancel_url"])


def test_503_is_retried_on_a_replaced_runner(harness: GatewayHarness, client: httpx.Client) -> None:
    url = harness.serve([app_config("echo")])
    data = submit(client, url, "echo/status/503?times=2&key=a")
    done = completed(client, data)
    assert "error" not in done
    assert client.get(data["response_url"]).json()["calls"] == 3
    pool = harness.pools["echo"]
    assert pool.replaced == ["echo-0", "echo-0-r1"]
    runners = [runner for rid, runner in pool.acquired if rid == data["request_id"]]
    assert runners == ["echo-0", "echo-0-r1", "echo-0-r1-r2"]


def test_504_is_retried_on_the_same_runner(harness: GatewayHarness, client: httpx.Client) -> None:
    url = harness.serve([app_config("echo")])
    data = submit(client, url, "echo/status/504?times=1&key=b")
    completed(client, data)
    assert client.get(data["response_url"]).status_code == 200
    pool = harness.pools["echo"]
    assert pool.replaced == []
    assert [runner for rid, runner in pool.acquired if rid == data["request_id"]] == ["echo-0", "echo-0"]


def test_other_errors_are_final(harness: GatewayHarness, client: httpx.Client) -> None:
    url = harness.serve([app_config("echo")])
    data = submit(client, url, "echo/status/500?times=1&key=c")
    done = completed(client, data)
    assert done["error_type"] == "runner_server_error"
    assert client.get(data["response_url"]).status_code == 500
    assert len(harness.pools["echo"].acquired) == 1


def test_no_retry_header_and_skip_retry_conditions_stop_retries(harness: GatewayHarness, client: httpx.Client) -> None:
    import dataclasses

    skipping = dataclasses.replace(app_config("skip"), skip_retry_conditions=("server_error",))
    url = harness.serve([app_config("echo"), skipping])
    data = submit(client, url, "echo/status/503?times=5&key=d", headers={"X-Fal-No-Retry": "1"})
    completed(client, data)
    assert client.get(data["response_url"]).status_code == 503
    assert len(harness.pools["echo"].acquired) == 1
    data = submit(client, url, "skip/status/503?times=5&key=e")
    completed(client, data)
    assert len(harness.pools["skip"].acquired) == 1


def test_at_most_ten_attempts(harness: GatewayHarness, client: httpx.Client) -> None:
    url = harness.serve([app_config("echo")])
    data = submit(client, url, "echo/status/503")
    done = completed(client, data)
    assert client.get(data["response_url"]).status_code == 503
    assert done["error"] == "status 503"
    assert len(harness.pools["echo"].acquired) == 10
    assert len(harness.pools["echo"].replaced) == 10


def test_request_timeout_in_queue_is_retried_then_reported(harness: GatewayHarness, client: httpx.Client) -> None:
    import dataclasses

    config = dataclasses.replace(app_config("echo", request_timeout=1), retry_config={"timeout": {"retries": 1}})
    url = harness.serve([config])
    data = submit(client, url, "echo/slow?s=30")
    done = completed(client, data)
    assert done["error_type"] == "request_timeout"
    assert len(harness.pools["echo"].acquired) == 2
    assert harness.pools["echo"].replaced == ["echo-0", "echo-0-r1"]
    result = client.get(data["response_url"])
    assert result.status_code == 504
    assert result.json()["error_type"] == "request_timeout"


def test_start_timeout_in_queue(harness: GatewayHarness, client: httpx.Client) -> None:
    url = harness.serve([app_config("echo")])
    blocker = submit(client, url, "echo/slow?s=30")
    wait_for(lambda: status(client, blocker).json()["status"] == "IN_PROGRESS")
    data = submit(client, url, "echo/", headers={"X-Fal-Request-Timeout": "1.5"})
    done = completed(client, data)
    assert done["error_type"] == "request_timeout"
    result = client.get(data["response_url"])
    assert result.status_code == 504
    assert result.headers["x-fal-request-timeout-type"] == "user"
    client.put(blocker["cancel_url"])


def test_status_stream_sends_sse_until_completed(harness: GatewayHarness, client: httpx.Client) -> None:
    url = harness.serve([app_config("echo")])
    blocker = submit(client, url, "echo/slow?s=30")
    wait_for(lambda: status(client, blocker).json()["status"] == "IN_PROGRESS")
    data = submit(client, url, "echo/log", None)
    seen: list[str] = []
    with client.stream("GET", data["status_url"] + "/stream", params={"logs": "1"}) as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        for line in resp.iter_lines():
            if not line.startswith("data: "):
                continue
            event = json.loads(line.removeprefix("data: "))
            seen.append(event["status"])
            if event["status"] == "IN_QUEUE" and len(seen) == 1:
                client.put(blocker["cancel_url"])
    assert seen[0] == "IN_QUEUE"
    assert seen[-1] == "COMPLETED"
    assert "IN_PROGRESS" in seen


@pytest.fixture
def webhook_sink() -> Iterator[tuple[str, Probe]]:
    probe = Probe("webhook")
    with ThreadedServer(probe) as server:
        yield server.url, probe


def test_webhook_gets_fals_payload(
    harness: GatewayHarness, client: httpx.Client, webhook_sink: tuple[str, Probe]
) -> None:
    hook_url, hook = webhook_sink
    url = harness.serve([app_config("echo")])
    ok = submit(client, url, f"echo/work?fal_webhook={hook_url}/hooks/ok", {"n": 1})
    bad = submit(client, url, f"echo/status/422?fal_webhook={hook_url}/hooks/bad")
    wait_for(lambda: len(hook.calls) == 2)
    by_path = {c["path"]: json.loads(c["body"]) for c in hook.calls}
    good = by_path["/hooks/ok"]
    assert good["request_id"] == ok["request_id"]
    assert good["gateway_request_id"] == ok["request_id"]
    assert good["status"] == "OK"
    assert good["payload"]["path"] == "/work"  # the runner saw no fal_webhook parameter
    assert good["payload"]["query"] == ""
    failed = by_path["/hooks/bad"]
    assert failed["status"] == "ERROR"
    assert failed["request_id"] == bad["request_id"]
    assert failed["payload"] == {"detail": "status 422", "runner": "echo-0"}
    assert "422" in failed["error"]


def test_queue_host_header_selects_the_queue_api(harness: GatewayHarness, client: httpx.Client) -> None:
    url = harness.serve([app_config("echo")])
    port = url.rsplit(":", 1)[1]
    resp = client.post(f"{url}/local/echo", json={}, headers={"Host": f"queue.localhost:{port}"})
    data = resp.json()
    assert data["status"] == "IN_QUEUE"
    assert data["status_url"].startswith(f"http://queue.localhost:{port}/local/echo/requests/")


def test_private_queue_needs_a_key_for_every_call(
    harness: GatewayHarness, client: httpx.Client, keys: KeyStore
) -> None:
    url = harness.serve([app_config("secret", auth="private")])
    _, value = keys.create("t")
    auth = {"Authorization": f"Key {value}"}
    assert client.post(f"{url}{Q}/secret", json={}).status_code == 401
    data = submit(client, url, "secret", headers=auth)
    assert client.get(data["status_url"]).status_code == 401
    assert client.get(data["response_url"]).status_code == 401
    assert client.put(data["cancel_url"]).status_code == 401
    wait_for(lambda: client.get(data["status_url"], headers=auth).status_code == 200)


def test_many_queued_requests_all_complete_once(harness: GatewayHarness, client: httpx.Client) -> None:
    import dataclasses

    url = harness.serve([dataclasses.replace(app_config("echo", max_multiplexing=4))], runners_per_app=2)
    ids = [submit(client, url, f"echo/n{i}")["request_id"] for i in range(60)]
    for rid in ids:
        wait_for(lambda rid=rid: client.get(f"{url}{Q}/echo/requests/{rid}/status").status_code == 200)
    acquired = [rid for rid, _ in harness.pools["echo"].acquired]
    assert sorted(acquired) == sorted(ids)
    paths = sorted(c["path"] for p in harness.probes.values() for c in p.calls)
    assert paths == sorted(f"/n{i}" for i in range(60))


def test_concurrent_status_polls_do_not_disturb_the_queue(harness: GatewayHarness, client: httpx.Client) -> None:
    url = harness.serve([app_config("echo")])
    data = submit(client, url, "echo/")
    errors: list[int] = []

    def poll() -> None:
        with httpx.Client() as c:
            for _ in range(20):
                code = c.get(data["status_url"]).status_code
                if code not in (200, 202):
                    errors.append(code)

    threads = [threading.Thread(target=poll) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    completed(client, data)


@pytest.mark.parametrize(
    ("query", "webhook", "rest"),
    [
        ("", None, ""),
        ("a=1%262&b=x%2By%20z", None, "a=1%262&b=x%2By%20z"),
        ("fal_webhook=https%3A%2F%2Fh%2Fw%3Fk%3D1&q=%26", "https://h/w?k=1", "q=%26"),
        ("q=1&fal_webhook=http://x/&flag", "http://x/", "q=1&flag"),
    ],
)
def test_webhook_is_taken_out_and_the_rest_of_the_query_stays_encoded(
    query: str, webhook: str | None, rest: str
) -> None:
    from falemu.gateway.queue_api import split_webhook

    assert split_webhook(query) == (webhook, rest)
