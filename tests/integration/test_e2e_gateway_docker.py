"""Issue 4 end to end on the real engine: the Emulator, Docker runners and the gateway, two apps at once.

One module-scoped Emulator serves, side by side under unique names:

- ``greeter`` from ``examples/direct-server``, made *private* (the default of ``fal deploy``);
- ``echo``, a public app written to a temporary folder whose endpoints echo what the runner
  received, stream server-sent events, fail with 503/504 on their first attempt, sleep, and record
  cancellations in ``/data``. It runs one runner at a time (``max_concurrency = 1``) so queued and
  timed-out requests are deterministic, and ``request_timeout = 4``.

Every assertion goes through HTTP against the gateway, as a user's client would.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import json
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

import httpx
import pytest
from docker_support import remove_app_images

pytestmark = pytest.mark.docker

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "direct-server"
OWNER = "e2e-owner"

ECHO_SERVER = '''
"""Echoes what the runner receives; fails on first attempts; streams; records cancels in /data."""

import asyncio
import hashlib
import json
import os
from pathlib import Path

from fastapi import FastAPI, Request, Response
from fastapi.responses import StreamingResponse

app = FastAPI(title="echo", version="1.0.0")
RUNNER = os.environ.get("FAL_JOB_ID", "local")
DATA = Path("/data")


@app.get("/health")
def health() -> dict:
    return {"ok": True}


@app.api_route("/echo", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
async def echo(request: Request) -> dict:
    body = await request.body()
    return {
        "runner": RUNNER,
        "method": request.method,
        "query": request.url.query,
        "sha256": hashlib.sha256(body).hexdigest(),
        "length": len(body),
        "headers": [[k, v] for k, v in request.headers.items()],
    }


@app.post("/slow")
async def slow(request: Request, seconds: float = 1.0) -> dict:
    print(f"echo slow {seconds:g} s for {request.headers.get('x-fal-request-id')}", flush=True)
    await asyncio.sleep(seconds)
    return {"runner": RUNNER, "slept": seconds}


@app.post("/slow/cancel")
async def slow_cancel(request: Request) -> dict:
    folder = DATA / "cancelled"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / request.headers.get("x-fal-request-id", "none")).write_text(RUNNER)
    return {"ok": True}


@app.post("/flaky")
async def flaky(run: str, status: int = 503) -> Response:
    """Answers ``status`` on the first call of ``run``, 200 after; appends the runner id to /data."""
    path = DATA / "flaky" / run
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fh.write(RUNNER + "\\n")
    attempts = path.read_text().split()
    if len(attempts) == 1:
        return Response(json.dumps({"detail": "first attempt fails"}), status_code=status,
                        media_type="application/json")
    return Response(json.dumps({"runner": RUNNER, "attempt": len(attempts)}), media_type="application/json")


@app.post("/stream")
async def stream(gate: str = "") -> StreamingResponse:
    """One event, then waits until /data/gates/<gate> exists (when a gate is named), then two more."""
    async def events():
        yield "data: " + json.dumps({"n": 1}) + "\\n\\n"
        flag = DATA / "gates" / gate
        for _ in range(300 if gate else 0):
            if flag.exists():
                break
            await asyncio.sleep(0.05)
        yield "data: " + json.dumps({"n": 2}) + "\\n\\n"
        yield "data: " + json.dumps({"n": 3}) + "\\n\\n"
    return StreamingResponse(events(), media_type="text/event-stream")
'''

ECHO_DOCKERFILE = """\
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}
WORKDIR /app
COPY server.py /app/server.py
EXPOSE 8000
CMD ["python3", "-m", "uvicorn", "server:app", "--host", "0.0.0.0", "--port", "8000", "--log-level", "warning"]
"""

ECHO_PYPROJECT = """\
[project]
name = "echo"
version = "1.0.0"

[tool.fal.apps.echo]
exposed_port = 8000
auth = "public"
min_concurrency = 1
max_concurrency = 1
keep_alive = 60
request_timeout = 4
termination_grace_period_seconds = 1

[tool.fal.apps.echo.image]
dockerfile = "Dockerfile"
build_args = { BASE_IMAGE = "python:3.11-slim" }

[tool.fal.apps.echo.health_check]
path = "/health"
"""


@dataclasses.dataclass
class Live:
    emu: Any
    data: Path
    key: str

    @property
    def echo(self) -> str:
        return str(self.emu.app_url("echo"))

    @property
    def greeter(self) -> str:
        return str(self.emu.app_url("greeter"))

    @property
    def echo_queue(self) -> str:
        return str(self.emu.queue_url("echo"))

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Key {self.key}"}


def wait_until(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, base_image: str, docker_client: Any) -> Iterator[Live]:
    from falemu.config import get_app, load_project
    from falemu.config.model import Project
    from falemu.config.settings import Settings
    from falemu.emulator import Emulator

    home = tmp_path_factory.mktemp("e2e-gateway")
    echo_dir = home / "echo"
    echo_dir.mkdir()
    (echo_dir / "server.py").write_text(ECHO_SERVER)
    (echo_dir / "Dockerfile").write_text(ECHO_DOCKERFILE)
    (echo_dir / "pyproject.toml").write_text(ECHO_PYPROJECT)
    suffix = secrets.token_hex(4)
    aliases = (f"e2e-greeter-{suffix}", f"e2e-echo-{suffix}")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FALEMU_BUILD_ARG_BASE_IMAGE", base_image)
        mp.setenv("FALEMU_CONFIG_DIR", str(home / "config"))
        mp.setenv("XDG_CONFIG_HOME", str(home / "xdg-config"))
        mp.setenv("XDG_CACHE_HOME", str(home / "cache"))
        mp.setenv("XDG_RUNTIME_DIR", str(home / "run"))
        example = load_project(EXAMPLE)
        greeter = dataclasses.replace(get_app(example, "greeter"), alias=aliases[0], auth="private")
        echo = dataclasses.replace(get_app(load_project(echo_dir), "echo"), alias=aliases[1])
        project = Project(root=example.root, pyproject=example.pyproject, apps={"greeter": greeter, "echo": echo})
        settings = Settings(port=0, owner=OWNER, data_dir=home / "data", runtime="docker")
        try:
            with Emulator(project, settings, warm=True) as emu:
                assert emu.api_key
                yield Live(emu=emu, data=home / "data", key=emu.api_key)
            # A normal stop leaves no container of either app behind.
            for alias in aliases:
                assert docker_client.containers.list(all=True, filters={"label": f"falemu.app={alias}"}) == []
        finally:
            remove_app_images(docker_client, *aliases)


# -- item 1 and "two apps at once" ------------------------------------------------------------------


def test_two_apps_serve_at_once_under_the_owner(live: Live, docker_client: Any) -> None:
    assert live.greeter.endswith(f"/{OWNER}/{live.emu.configs['greeter'].alias}")
    greeted = httpx.post(f"{live.greeter}/greet", json={"name": "fal"}, headers=live.auth(), timeout=60)
    echoed = httpx.get(f"{live.echo}/echo", timeout=60)
    assert greeted.status_code == 200, greeted.text
    assert greeted.json()["message"] == "Hello, fal."
    assert echoed.status_code == 200, echoed.text
    for name in ("greeter", "echo"):
        alias = live.emu.configs[name].alias
        running = docker_client.containers.list(filters={"label": f"falemu.app={alias}"})
        assert len(running) == 1, name
    assert greeted.json()["runner"] != echoed.json()["runner"]
    greeter_doc = live.emu.openapi("greeter")
    echo_doc = live.emu.openapi("echo")
    assert greeter_doc is not None
    assert "/greet" in greeter_doc["paths"]
    assert echo_doc is not None
    assert "/flaky" in echo_doc["paths"]


# -- item 2: sync API --------------------------------------------------------------------------------


def test_sync_api_forwards_method_headers_and_body_unmodified(live: Live) -> None:
    body = secrets.token_bytes(300_000)
    answer = httpx.put(
        f"{live.echo}/echo?a=1&b=two",
        content=body,
        headers={"Content-Type": "application/octet-stream", "X-Custom-Thing": "kept as is"},
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    seen = answer.json()
    headers = dict(seen["headers"])
    assert seen["method"] == "PUT"
    assert seen["query"] == "a=1&b=two"
    assert seen["length"] == len(body)
    assert seen["sha256"] == hashlib.sha256(body).hexdigest()
    assert headers["x-custom-thing"] == "kept as is"
    assert headers["content-type"] == "application/octet-stream"
    for method in ("DELETE", "PATCH"):
        assert httpx.request(method, f"{live.echo}/echo", timeout=60).json()["method"] == method
    encoded = httpx.get(f"{live.echo}/echo?text=a%26b%3Dc&sum=1%2B1&space=x%20y", timeout=60)
    assert encoded.json()["query"] == "text=a%26b%3Dc&sum=1%2B1&space=x%20y"


def test_sync_api_streams_a_chunked_request_body(live: Live) -> None:
    chunks = [secrets.token_bytes(64_000) for _ in range(8)]

    def upload() -> Iterator[bytes]:
        yield from chunks

    answer = httpx.post(f"{live.echo}/echo", content=upload(), timeout=60)
    assert answer.status_code == 200, answer.text
    assert answer.json()["sha256"] == hashlib.sha256(b"".join(chunks)).hexdigest()
    assert answer.json()["length"] == 8 * 64_000


def test_unknown_app_and_unknown_request_are_404_with_a_request_id(live: Live) -> None:
    unknown_app = httpx.post(f"{live.emu.base_url}/{OWNER}/no-such-app/echo", timeout=30)
    assert unknown_app.status_code == 404
    assert unknown_app.headers["x-fal-request-id"]
    unknown_id = f"{live.echo_queue}/requests/00000000-0000-0000-0000-000000000000"
    for url in (unknown_id, unknown_id + "/status"):
        missing = httpx.get(url, timeout=30)
        assert missing.status_code == 404, url
        assert missing.headers["x-fal-request-id"]


def test_sync_api_streams_sse_without_buffering(live: Live) -> None:
    gate = secrets.token_hex(4)
    events: list[dict[str, Any]] = []
    with httpx.stream("POST", f"{live.echo}/stream?gate={gate}", timeout=20) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = response.iter_lines()
        for line in lines:
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
                break
        # The runner holds the rest back until the gate opens: a gateway that buffered the whole body
        # would never have handed us the first event (the read above would time out instead).
        assert events == [{"n": 1}]
        flag = live.data / "gates" / gate
        flag.parent.mkdir(parents=True, exist_ok=True)
        flag.write_text("open")
        for line in lines:
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
    assert events == [{"n": 1}, {"n": 2}, {"n": 3}]


def test_real_fal_client_stream_and_run_on_docker_runners(live: Live) -> None:
    import fal_client

    from falemu.testing import fal_client_routed_to

    app_id = f"{OWNER}/{live.emu.configs['echo'].alias}"
    with fal_client_routed_to(live.emu):
        events = list(fal_client.stream(app_id, arguments={}, path="/stream"))
        ran = fal_client.run(app_id + "/echo", arguments={"x": 1})
    assert events == [{"n": 1}, {"n": 2}, {"n": 3}]
    assert ran["method"] == "POST"
    assert dict(ran["headers"])["x-fal-endpoint"]


# -- item 3: queue API -------------------------------------------------------------------------------


def submit(live: Live, path: str, **kwargs: Any) -> dict[str, Any]:
    answer = httpx.post(f"{live.echo_queue}{path}", timeout=60, **kwargs)
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-fal-request-id"]
    data: dict[str, Any] = answer.json()
    return data


def finished(live: Live, sub: dict[str, Any], timeout: float = 60) -> httpx.Response:
    def done() -> httpx.Response | None:
        status = httpx.get(sub["status_url"], timeout=30)
        return status if status.status_code == 200 else None

    result: httpx.Response = wait_until(done, timeout, f"request {sub['request_id']} to complete")
    return result


def test_queue_status_shapes_logs_and_result(live: Live) -> None:
    busy = submit(live, "/slow?seconds=2")
    queued = submit(live, "/slow?seconds=0.5")
    for key in ("request_id", "response_url", "status_url", "cancel_url"):
        assert key in queued
    assert queued["status"] == "IN_QUEUE"
    assert isinstance(queued["queue_position"], int)

    waiting = httpx.get(queued["status_url"], timeout=30)  # the one runner is busy with `busy`
    assert waiting.status_code == 202
    assert waiting.json()["status"] == "IN_QUEUE"
    assert isinstance(waiting.json()["queue_position"], int)

    def in_progress() -> httpx.Response | None:
        status = httpx.get(busy["status_url"] + "?logs=1", timeout=30)
        return status if status.json()["status"] == "IN_PROGRESS" else None

    running = wait_until(in_progress, 60, "the first request to start")
    assert running.status_code == 202
    assert "logs" in running.json()

    done = finished(live, busy)
    for spelling in ("logs=true", "logs=1", "logs=True"):
        with_logs = httpx.get(f"{busy['status_url']}?{spelling}", timeout=30).json()
        assert with_logs["status"] == "COMPLETED"
        assert any(f"echo slow 2 s for {busy['request_id']}" in e["message"] for e in with_logs["logs"]), spelling
        assert with_logs["metrics"]["inference_time"] >= 2.0
    assert "error" not in done.json() or done.json()["error"] is None
    without = httpx.get(f"{busy['status_url']}?logs=0", timeout=30).json()
    assert not without.get("logs")

    trailing = httpx.get(busy["status_url"] + "/", timeout=30)
    assert trailing.status_code == 200
    result = httpx.get(busy["response_url"] + "/", timeout=30)
    assert result.status_code == 200
    assert result.json()["slept"] == 2.0
    finished(live, queued)
    assert httpx.get(queued["response_url"], timeout=30).json()["slept"] == 0.5


def test_queue_status_stream_is_sse_until_completed(live: Live) -> None:
    sub = submit(live, "/slow?seconds=1")
    statuses: list[str] = []
    with httpx.stream("GET", sub["status_url"] + "/stream?logs=1", timeout=60) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data:"):
                statuses.append(json.loads(line[5:].strip())["status"])
    assert statuses[-1] == "COMPLETED"
    assert "IN_PROGRESS" in statuses


def test_queue_cancel_in_progress_reaches_runner_then_already_completed(live: Live) -> None:
    sub = submit(live, "/slow?seconds=2")
    wait_until(
        lambda: httpx.get(sub["status_url"], timeout=30).json()["status"] == "IN_PROGRESS", 60, "request to start"
    )
    cancel = httpx.put(sub["cancel_url"], timeout=30)
    assert cancel.status_code == 202
    assert cancel.json()["status"] == "CANCELLATION_REQUESTED"
    marker = live.data / "cancelled" / sub["request_id"]
    wait_until(marker.exists, 30, "the runner to receive POST /slow/cancel")
    finished(live, sub)
    again = httpx.put(sub["cancel_url"] + "/", timeout=30)
    assert again.status_code == 400
    assert again.json()["status"] == "ALREADY_COMPLETED"
    unknown = sub["cancel_url"].replace(sub["request_id"], "00000000-0000-0000-0000-000000000000")
    missing = httpx.put(unknown, timeout=30)
    assert missing.status_code == 404
    assert missing.json()["status"] == "NOT_FOUND"


def test_queue_cancel_of_a_queued_request_removes_it(live: Live) -> None:
    busy = submit(live, "/slow?seconds=1.5")
    queued = submit(live, "/echo")
    cancel = httpx.put(queued["cancel_url"], timeout=30)
    assert cancel.status_code == 202
    assert cancel.json()["status"] == "CANCELLATION_REQUESTED"
    status = finished(live, queued).json()
    assert status["error_type"] == "client_cancelled"
    assert httpx.get(queued["response_url"], timeout=30).status_code == 499
    finished(live, busy)


def test_queue_forwards_the_query_string_intact(live: Live) -> None:
    sub = submit(live, "/echo?text=a%26b%3Dc&sum=1%2B1&space=x%20y&pct=100%25")
    finished(live, sub)
    result = httpx.get(sub["response_url"], timeout=30)
    assert result.status_code == 200, result.text
    seen = result.json()
    assert parse_qs(seen["query"]) == {"text": ["a&b=c"], "sum": ["1+1"], "space": ["x y"], "pct": ["100%"]}


def test_queue_webhook_receives_fal_payload(live: Live) -> None:
    received: list[dict[str, Any]] = []

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            received.append(json.loads(self.rfile.read(length)))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        hook = f"http://127.0.0.1:{server.server_address[1]}/hook"
        sub = submit(live, f"/slow?seconds=0&fal_webhook={quote(hook, safe='')}")
        wait_until(lambda: received, 30, "the webhook POST")
    finally:
        server.shutdown()
        server.server_close()
    (payload,) = received
    assert payload["request_id"] == sub["request_id"]
    assert payload["status"] == "OK"
    assert payload["payload"]["slept"] == 0.0
    assert "gateway_request_id" in payload


# -- item 4: headers and errors ----------------------------------------------------------------------


def test_runner_gets_fal_headers_and_caller_x_fal_headers_are_stripped(live: Live) -> None:
    answer = httpx.post(
        f"{live.echo}/echo",
        headers={**live.auth(), "x-fal-endpoint": "/forged", "x-fal-made-up": "1", "x-fal-request-id": "forged"},
        timeout=60,
    )
    assert answer.status_code == 200
    request_id = answer.headers["x-fal-request-id"]
    received = answer.json()["headers"]
    names = [k for k, _ in received]
    headers = dict(received)
    assert headers["x-fal-request-id"] == request_id != "forged"
    assert headers["x-fal-endpoint"] != "/forged"
    assert headers["x-fal-caller-user-id"]
    assert "x-fal-made-up" not in names
    assert names.count("x-fal-request-id") == names.count("x-fal-endpoint") == 1
    assert "authorization" not in names  # the fal key is the gateway's, not the runner's

    queued = submit(live, "/echo", headers={"x-fal-made-up": "1"})
    finished(live, queued)
    result = httpx.get(queued["response_url"], timeout=30)
    assert result.headers["x-fal-request-id"]
    queued_headers = dict(result.json()["headers"])
    assert queued_headers["x-fal-request-id"] == queued["request_id"]
    assert "x-fal-made-up" not in queued_headers


def test_platform_errors_carry_detail_error_type_and_header(live: Live) -> None:
    bad = httpx.post(f"{live.echo}/echo", headers={"X-Fal-Request-Timeout": "0.5"}, timeout=60)
    assert bad.status_code == 400
    assert bad.headers["x-fal-error-type"] == "bad_request"
    assert bad.json()["error_type"] == "bad_request"
    assert bad.json()["detail"]
    assert bad.headers["x-fal-request-id"]


# -- item 5: auth -------------------------------------------------------------------------------------


def test_private_app_refuses_missing_and_wrong_key_and_accepts_the_local_key(live: Live) -> None:
    missing = httpx.post(f"{live.greeter}/greet", json={"name": "x"}, timeout=60)
    assert missing.status_code == 401
    assert missing.headers["x-fal-request-id"]
    key_id = live.key.partition(":")[0]
    for wrong in ("00000000-0000-0000-0000-000000000000:nope", f"{key_id}:not-the-secret"):
        refused = httpx.post(f"{live.greeter}/greet", json={"name": "x"}, headers={"Authorization": f"Key {wrong}"})
        assert refused.status_code == 401
        assert refused.json() == {"detail": "No user found for Key ID and Secret"}
    queued = httpx.post(f"{live.emu.queue_url('greeter')}/greet", json={"name": "x"}, timeout=60)
    assert queued.status_code == 401
    ok = httpx.post(f"{live.greeter}/greet", json={"name": "x"}, headers=live.auth(), timeout=60)
    assert ok.status_code == 200
    ok_bearer = httpx.post(
        f"{live.greeter}/greet", json={"name": "x"}, headers={"Authorization": f"Bearer {live.key}"}, timeout=60
    )
    assert ok_bearer.status_code == 200
    public = httpx.post(f"{live.echo}/echo", timeout=60)  # the public app needs no key
    assert public.status_code == 200
    secret = live.key.partition(":")[2]
    assert all(secret not in repr(event) for event in live.emu.events.history)


# -- item 6: timeouts and queue retry rules on real runners -------------------------------------------


def runner_stop_reasons(live: Live, runner: str) -> list[str]:
    from falemu.events import RunnerStopped

    return [e.reason for e in live.emu.events.history if isinstance(e, RunnerStopped) and e.runner == runner]


def test_request_start_timeout_header_gives_user_504(live: Live) -> None:
    busy = submit(live, "/slow?seconds=3")
    wait_until(lambda: httpx.get(busy["status_url"], timeout=30).json()["status"] == "IN_PROGRESS", 60, "busy runner")
    late = httpx.post(f"{live.echo}/echo", headers={"X-Fal-Request-Timeout": "1.5"}, timeout=60)
    assert late.status_code == 504
    assert late.headers["x-fal-request-timeout-type"] == "user"
    assert late.headers["x-fal-error-type"]
    finished(live, busy)


def test_request_timeout_is_504_and_replaces_the_runner(live: Live) -> None:
    before = {r.id for r in live.emu.runners("echo")}
    answer = httpx.post(f"{live.echo}/slow?seconds=20", timeout=60)
    assert answer.status_code == 504
    assert answer.json()["error_type"] == "request_timeout"
    assert answer.headers["x-fal-error-type"] == "request_timeout"
    (old,) = before
    wait_until(lambda: runner_stop_reasons(live, old), 30, "the timed-out runner to be replaced")
    after = httpx.get(f"{live.echo}/echo", timeout=60)
    assert after.status_code == 200
    assert after.json()["runner"] != old


def test_queued_503_is_retried_on_a_new_runner(live: Live) -> None:
    run = secrets.token_hex(4)
    sub = submit(live, f"/flaky?run={run}&status=503")
    finished(live, sub)
    result = httpx.get(sub["response_url"], timeout=30)
    assert result.status_code == 200, result.text
    first, second = (live.data / "flaky" / run).read_text().split()
    assert result.json() == {"runner": second, "attempt": 2}
    assert first != second  # 503: the runner was replaced ...
    assert runner_stop_reasons(live, first)  # ... and stopped


def test_queued_504_is_retried_on_the_same_runner(live: Live) -> None:
    run = secrets.token_hex(4)
    sub = submit(live, f"/flaky?run={run}&status=504")
    finished(live, sub)
    result = httpx.get(sub["response_url"], timeout=30)
    assert result.status_code == 200, result.text
    first, second = (live.data / "flaky" / run).read_text().split()
    assert first == second  # 504: retried, runner kept
    assert not runner_stop_reasons(live, first)


def test_x_fal_no_retry_prevents_the_retry(live: Live) -> None:
    run = secrets.token_hex(4)
    sub = submit(live, f"/flaky?run={run}&status=503", headers={"x-fal-no-retry": "1"})
    status = finished(live, sub).json()
    assert status["status"] == "COMPLETED"
    assert status.get("error")
    assert httpx.get(sub["response_url"], timeout=30).status_code == 503
    assert len((live.data / "flaky" / run).read_text().split()) == 1
