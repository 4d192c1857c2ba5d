"""Proxy App Mode on the real engine: fal.App classes served by the real fal 1.83.0 inside runners.

The Apps are in tests/apps/falapp. They share their requirements and have no image of their own, so
the session installs fal into one image (on the offline base image) and every App reuses that layer.
One emulator (HTTPS, a private CA) serves the Lifecycle App for the first tests: setup() before
readiness and before the first request, fal's runner environment, the sync, queue and websocket
paths, fal's realtime protocol, the real fal_client, and the class's max_concurrency and keep_alive.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import http.server
import itertools
import json
import os
import secrets
import ssl
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from falemu.errors import RunnerError
from falemu.testing import wait_until

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parents[2]
APPS = ROOT / "tests" / "apps" / "falapp"


@pytest.fixture(scope="module")
def falapp_env(base_image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Apps without an image run on the offline base image; keys and the CA in a folder of this module."""
    home = tmp_path_factory.mktemp("falapp")
    values = {
        "FALEMU_PYTHON_IMAGE": base_image,
        "FALEMU_BUILD_ARG_BASE_IMAGE": base_image,
        "FALEMU_CONFIG_DIR": str(home / "config"),
        "XDG_RUNTIME_DIR": str(home / "run"),
    }
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    yield home
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _resolve(name: str, alias: str) -> Any:
    from falemu.config import load_project
    from falemu.config.falapp import resolve

    project = load_project(APPS / "pyproject.toml")
    return project, dataclasses.replace(resolve(project, name), alias=alias)


def _remove_images(docker_client: Any, alias: str) -> None:
    for image in docker_client.images.list(filters={"label": f"falemu.app={alias}"}):
        try:
            docker_client.images.remove(image.id, force=True)
        except Exception:
            pass


@dataclasses.dataclass
class Live:
    emulator: Any
    alias: str
    events: Any
    verify: Any
    env: dict[str, str]  # `falemu env` for fal_client
    naps: str  # the alias of the Naps App (request_timeout=3)

    @property
    def url(self) -> str:
        return str(self.emulator.app_url(self.alias))

    def client(self) -> httpx.Client:
        return httpx.Client(verify=self.verify, timeout=60)

    def lines(self) -> list[str]:
        return [e.line for e in self.events.history if e.kind == "RunnerLog"]


@pytest.fixture(scope="module")
def live(falapp_env: Path, docker_client: Any) -> Iterator[Live]:
    from click.testing import CliRunner

    from falemu.cli import cli
    from falemu.config.falapp import resolve
    from falemu.config.settings import Settings
    from falemu.emulator import Emulator
    from falemu.events import EventBus
    from falemu.gateway.tls import client_bundle

    alias = f"lifecycle-{secrets.token_hex(4)}"
    project, app = _resolve("lifecycle", alias)
    naps = dataclasses.replace(resolve(project, str(APPS / "apps.py::Naps")), alias=f"naps-{secrets.token_hex(4)}")
    bus = EventBus(history=100_000)
    settings = Settings(port=0, data_dir=falapp_env / "data", runtime="docker", tls=True)
    emulator = Emulator(project, settings, apps=["lifecycle", naps.name], events=bus, warm=True, preloaded=[app, naps])
    try:
        emulator.start()
        result = CliRunner().invoke(cli, ["env", "--port", str(emulator.port)])
        assert result.exit_code == 0, result.output
        env = {k: v for k, v in os.environ.items() if not k.startswith("FAL_")}
        for line in result.stdout.splitlines():
            name, _, value = line.removeprefix("export ").partition("=")
            env[name] = value.strip("'")
        yield Live(emulator=emulator, alias=alias, events=bus, verify=client_bundle(), env=env, naps=naps.alias)
    finally:
        emulator.stop()
        _remove_images(docker_client, alias)
        _remove_images(docker_client, naps.alias)


def test_setup_runs_before_the_port_opens_and_before_the_first_request(live: Live) -> None:
    # this App's runner: the fixture's other App (Naps, no slow setup) starts at the same time
    ready = [e for e in live.events.history if e.kind == "RunnerReady" and e.app == live.alias]
    assert ready, "the warm runner never became ready"
    # setup() sleeps 1.5 s: fal's server binds 8080 only once it has returned. It begins during the engine's
    # start call (the "start" phase), so the port opens at least 1.5 s after that call began.
    timeline = ready[0].timeline
    assert timeline["start"] + timeline["port_open"] >= 1.45, timeline
    with live.client() as client:
        answer = client.post(f"{live.url}/echo", json={"text": "first"})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["text"] == "first"
    assert body["answered_at"] > body["setup_finished_at"]
    env = body["env"]
    assert env["FAL_APP_NAME"] == f"local/{live.alias}"
    assert env["FAL_RUNNER_STATE"] == "RUNNING"  # fal sets it: SETUP during setup(), then RUNNING
    assert env["IS_ISOLATE_AGENT"] == "1"
    assert env["FAL_KEY"] == live.emulator.api_key  # the local user's key, as fal gives runners the owner's
    assert env["HF_HOME"] == "/data/.cache/huggingface"
    assert env["data"] == "True"
    assert answer.headers["x-fal-runner-hints"] == f"runner-{env['FAL_JOB_ID']}"  # provide_hints()
    lines = live.lines()
    assert lines.index("falemu-test: setup started") < lines.index("falemu-test: setup finished")


def test_queue_and_the_real_fal_client(live: Live) -> None:
    with live.client() as client:
        submitted = client.post(f"{live.emulator.queue_url(live.alias)}/echo", json={"text": "queued"}).json()
        deadline = time.monotonic() + 60
        while client.get(submitted["status_url"]).json()["status"] != "COMPLETED":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert client.get(submitted["response_url"]).json()["text"] == "queued"
    script = textwrap.dedent(
        f"""
        import json, fal_client
        app = "local/{live.alias}"
        ran = fal_client.run(app + "/echo", arguments={{"text": "run"}})
        handle = fal_client.submit(app + "/echo", arguments={{"text": "submit"}})
        # realtime() and ws_connect() as documented: a token from rest.fal.ai/tokens/ first (use_jwt=True)
        with fal_client.realtime(app) as connection:
            connection.send({{"text": "rt"}})
            realtime = connection.recv()["text"]
        with fal_client.ws_connect(app, path="/ws") as socket:
            socket.send("hi")
            echoed = socket.recv()
        print(json.dumps([ran["text"], handle.get()["text"], realtime, echoed]))
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], env=live.env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == ["run", "submit", "RT", "echo:hi"]


def test_openapi_websocket_and_realtime_through_the_gateway(live: Live) -> None:
    import msgpack
    from websockets.sync.client import connect

    document = live.emulator.openapi(live.alias)
    assert document is not None
    assert document["x-fal-order-paths"][:1] == ["/echo"]
    assert document["components"]["schemas"]["EchoOutput"]["x-fal-order-properties"][:2] == ["text", "runner"]
    assert document["paths"]["/realtime"]["x-fal-protocol"]["type"] == "realtime"
    assert document["paths"]["/ws"]["x-fal-protocol"]["type"] == "websocket"

    ws_url = "ws" + live.url.removeprefix("http")  # ws:// or wss://, as the gateway serves
    context = ssl.create_default_context(cafile=str(live.verify)) if ws_url.startswith("wss") else None
    with connect(f"{ws_url}/ws", ssl=context, open_timeout=60) as socket:
        socket.send("hello")
        assert socket.recv(timeout=30) == "echo:hello"
        socket.send("bye")
    with connect(f"{ws_url}/realtime", ssl=context, open_timeout=60) as socket:
        socket.send(msgpack.packb({"text": "loud"}))
        assert msgpack.unpackb(socket.recv(timeout=30)) == {"text": "LOUD", "sleep": 0.0}


def test_scale_out_stops_at_the_class_max_concurrency_and_idle_runners_stop_after_keep_alive(live: Live) -> None:
    controller = live.emulator.controller(live.alias)
    live.emulator.expire_idle(live.alias)  # start from no runner: every start below is this test's
    wait_until(lambda: not controller.runners(), timeout=60, what="no runner left")
    seen_before = len(live.events.history)
    peak = 0
    done = threading.Event()

    def watch() -> None:
        nonlocal peak
        while not done.is_set():
            live_runners = [r for r in controller.runners() if r.state in ("PENDING", "SETUP", "IDLE", "RUNNING")]
            peak = max(peak, len(live_runners))
            time.sleep(0.02)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    with live.client() as client, concurrent.futures.ThreadPoolExecutor(6) as pool:
        answers = list(
            pool.map(
                lambda i: client.post(f"{live.url}/echo", json={"text": str(i), "sleep": 3.0}, timeout=180),
                range(6),
            )
        )
    done.set()
    watcher.join()
    assert [a.status_code for a in answers] == [200] * 6
    events = list(live.events.history)[seen_before:]
    # Six waiting requests ask for six runners; max_concurrency=2 (a class kwarg) caps the scale-out.
    targets = [e.target for e in events if e.kind == "ScaledUp"]
    assert targets
    assert max(targets) == 2
    assert peak == 2
    # max_multiplexing=1 (a class variable): a runner never ran two of these 3-second requests at once.
    served: dict[str, list[float]] = {}
    for answer in answers:
        served.setdefault(answer.json()["runner"], []).append(answer.json()["answered_at"])
    for ends in served.values():
        ends.sort()
        assert all(later - earlier >= 2.9 for earlier, later in itertools.pairwise(ends)), ends
    # keep_alive=2 (a class kwarg): a runner stops once two seconds have passed since its last request.
    wait_until(lambda: not controller.runners(), timeout=60, what="idle runners stopped")
    stops = {e.runner: e for e in live.events.history if e.kind == "RunnerStopped"}
    for runner, ends in served.items():
        assert stops[runner].reason == "keep_alive"
        assert stops[runner].ts - ends[-1] >= 1.9


def test_request_timeout_of_the_class_is_enforced_by_falemu(live: Live) -> None:
    with live.client() as client:
        client.headers["Authorization"] = f"Key {live.emulator.api_key}"  # a private App (fal deploy's default)
        url = live.emulator.app_url(live.naps)
        quick = client.post(f"{url}/nap", json={"text": "quick"})
        assert quick.status_code == 200, quick.text
        started = time.monotonic()
        slow = client.post(f"{url}/nap", json={"text": "slow", "sleep": 20})
    assert slow.status_code == 504
    assert slow.json()["error_type"] == "request_timeout"
    assert time.monotonic() - started < 15  # request_timeout=3 (a class kwarg), not the 20 s nap


def test_teardown_runs_when_the_emulator_stops(live: Live) -> None:
    with live.client() as client:
        assert client.post(f"{live.url}/echo", json={"text": "last"}).status_code == 200
    live.emulator.stop()
    wait_until(lambda: "falemu-test: teardown ran" in live.lines(), timeout=15, what="teardown output")


# -- failures ------------------------------------------------------------------------------------------


def test_failing_setup_is_reported_at_once_with_its_traceback_and_backs_off(
    falapp_env: Path, docker_client: Any
) -> None:
    from falemu.config import load_project
    from falemu.config.falapp import resolve
    from falemu.config.settings import Settings
    from falemu.emulator import Emulator
    from falemu.events import EventBus

    alias = f"broken-setup-{secrets.token_hex(4)}"
    project = load_project(APPS / "pyproject.toml")
    app = dataclasses.replace(resolve(project, "apps.py::BrokenSetup", cwd=APPS), alias=alias)
    bus = EventBus()
    settings = Settings(port=0, data_dir=falapp_env / "data", runtime="docker")
    emulator = Emulator(project, settings, apps=[app.name], events=bus, preloaded=[app])
    try:
        emulator.start()
        started = time.monotonic()
        key = {"Authorization": f"Key {emulator.api_key}"}  # the App is private (fal deploy's default)
        answer = httpx.post(f"{emulator.app_url(alias)}/", json={}, headers=key, timeout=120)
        assert time.monotonic() - started < 60  # reported when the runner exits, not at startup_timeout (600 s)
        assert answer.status_code >= 500
        failed = [e for e in bus.history if e.kind == "RunnerFailed"]
        assert failed
        assert "exited with code 3" in failed[0].message  # uvicorn's lifespan failure code, as on fal
        assert "Traceback" in failed[0].logs
        assert "RuntimeError: the model weights are missing" in failed[0].logs
        backoff = emulator.controller(alias).backoff()
        assert backoff is not None
        assert backoff["failures"] >= 1
        assert docker_client.containers.list(all=True, filters={"label": f"falemu.app={alias}"}) == []
        emulator.stop()

        # As `falemu up` starts it (a warm runner, the gateway built meanwhile): start() fails with the
        # runner's error and setup()'s traceback, and nothing serves or runs.
        warm = Emulator(project, settings, apps=[app.name], events=EventBus(), preloaded=[app], warm=True)
        try:
            with pytest.raises(RunnerError, match="exited with code 3") as info:
                warm.start()
            assert "RuntimeError: the model weights are missing" in info.value.logs
            assert "Traceback" in info.value.logs
            with pytest.raises(httpx.ConnectError):
                httpx.get(f"http://127.0.0.1:{warm.port}/", timeout=2)
            assert docker_client.containers.list(all=True, filters={"label": f"falemu.app={alias}"}) == []
        finally:
            warm.stop()
    finally:
        emulator.stop()
        _remove_images(docker_client, alias)


def test_setup_outlasting_startup_timeout_fails_and_leaves_nothing(falapp_env: Path, docker_client: Any) -> None:
    from falemu.config.falapp import resolve
    from falemu.errors import StartupTimeout
    from falemu.runtime.base import RunnerSpec
    from falemu.runtime.docker import DockerRuntime

    alias = f"slow-setup-{secrets.token_hex(4)}"
    app = dataclasses.replace(resolve(None, str(APPS / "apps.py::SlowSetup")), alias=alias)
    assert app.scaling.startup_timeout == 10  # a class kwarg
    runtime = DockerRuntime(reap=False)
    try:
        prepared = runtime.prepare(app)
        started = time.monotonic()
        with pytest.raises(StartupTimeout) as info:
            runtime.start(RunnerSpec(prepared, "s1", "local", falapp_env / "data", gpu="off"))
        assert time.monotonic() - started < 40
        assert "startup_timeout (10 s)" in info.value.message
        assert "GET /health" in info.value.message
        assert "falemu-test: slow setup" in info.value.logs
        assert docker_client.containers.list(all=True, filters={"label": f"falemu.app={alias}"}) == []
    finally:
        runtime.close()
        _remove_images(docker_client, alias)


class _PngHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        import struct
        import zlib

        def chunk(kind: bytes, data: bytes) -> bytes:
            return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

        raw = b"".join(b"\x00" + b"\xff\x00\x00" * 3 for _ in range(2))  # 3x2 red pixels
        body = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 3, 2, 8, 2, 0, 0, 0))
        body += chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_runner_downloads_from_addresses_falemu_names_and_still_refuses_others(
    falapp_env: Path, docker_client: Any
) -> None:
    from falemu.config.falapp import resolve
    from falemu.runtime.base import RunnerSpec
    from falemu.runtime.docker import DockerRuntime

    gateway = _bridge_address(docker_client)  # where host.docker.internal points: a private address
    server = http.server.ThreadingHTTPServer(("0.0.0.0", 0), _PngHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://{gateway}:{server.server_address[1]}/red.png"
    alias = f"fetcher-{secrets.token_hex(4)}"
    app = dataclasses.replace(resolve(None, str(APPS / "apps.py::Fetcher")), alias=alias)
    runtime = DockerRuntime(reap=False)
    try:
        prepared = runtime.prepare(app)
        data = falapp_env / "data"
        allowed = runtime.start(
            RunnerSpec(prepared, "a1", "local", data, gpu="off", env={"FALEMU_PUBLIC_ADDRESSES": gateway})
        )
        plain = runtime.start(RunnerSpec(prepared, "p1", "local", data, gpu="off"))
        fetched = httpx.post(f"{allowed.url}/fetch", json={"url": url}, timeout=60).json()
        assert fetched == {"ok": True, "detail": f"{len(_png())} bytes", "size": [3, 2]}
        loopback = httpx.post(f"{allowed.url}/fetch", json={"url": "http://127.0.0.1:8080/health"}, timeout=60)
        assert loopback.json()["ok"] is False
        assert "non-routable" in loopback.json()["detail"]
        refused = httpx.post(f"{plain.url}/fetch", json={"url": url}, timeout=60).json()
        assert refused["ok"] is False
        assert "non-routable" in refused["detail"]
    finally:
        runtime.close()
        server.shutdown()
        server.server_close()
        _remove_images(docker_client, alias)


def _bridge_address(docker_client: Any) -> str:
    import ipaddress

    config = docker_client.networks.get("bridge").attrs["IPAM"]["Config"][0]
    return str(config.get("Gateway") or next(ipaddress.ip_network(config["Subnet"]).hosts()))


def _png() -> bytes:
    handler = _PngHandler.__new__(_PngHandler)
    captured: list[bytes] = []

    class _Out:
        def write(self, data: bytes) -> None:
            captured.append(data)

    handler.wfile = _Out()  # type: ignore[assignment]
    handler.send_response = lambda *a: None  # type: ignore[method-assign]
    handler.send_header = lambda *a: None  # type: ignore[method-assign]
    handler.end_headers = lambda: None  # type: ignore[method-assign]
    handler.do_GET()
    return b"".join(captured)


def _up(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "pytest_plugin")])}
    return subprocess.run(
        [sys.executable, "-m", "falemu", "up", "--port", "0", "--runtime", "docker", *args],
        cwd=APPS,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_image_python_mismatch_and_a_failing_dockerfile_are_one_line_errors(
    falapp_env: Path, docker_client: Any
) -> None:
    mismatch = _up("broken.py::WrongPython")
    assert mismatch.returncode == 2, mismatch.stderr
    error = [line for line in mismatch.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1
    assert "runs Python 3.12.1 and this machine runs 3.11" in error[0]
    assert "Traceback" not in mismatch.stderr
    failed = _up("broken.py::BrokenBuild")
    assert failed.returncode == 2, failed.stderr  # a Dockerfile that does not build is a project mistake
    error = [line for line in failed.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1
    assert "image build of broken-build failed at step" in error[0]
    assert "no such package: libfalemu-nothing" in failed.stderr  # the step's own output, in the hint
    for alias in ("wrong-python", "broken-build"):
        assert docker_client.containers.list(all=True, filters={"label": f"falemu.app={alias}"}) == []
        _remove_images(docker_client, alias)
