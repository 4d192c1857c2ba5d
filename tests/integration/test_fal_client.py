"""The real fal_client 1.0.3, unmodified, against falemu's gateway over HTTPS.

The gateway is served as `falemu up` serves it (HTTP and HTTPS with falemu's local CA on one port,
no flag); each fal_client call runs in a
subprocess whose environment comes from `falemu env` (fal_client reads its hosts at import). Runners
are probe apps on loopback behind a StaticPool.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from falemu.cli import cli
from falemu.config.model import AppConfig, AppShape, ScalingConfig
from falemu.config.settings import Settings
from falemu.events import EventBus, RunnerLog
from falemu.gateway import GatewayApp, create_app
from falemu.gateway.keys import KeyStore
from falemu.gateway.listener import GatewayServer
from falemu.gateway.loop import new_event_loop
from falemu.gateway.probe import Probe
from falemu.gateway.serve import ThreadedServer
from falemu.gateway.server import gateway_server_options
from falemu.gateway.static_pool import StaticPool
from falemu.runtime.base import Runner

fal_client = pytest.importorskip("fal_client")


@dataclass
class Setup:
    env: dict[str, str]
    probes: dict[str, Probe]
    pools: dict[str, StaticPool]
    config_dir: Path


def _config(alias: str, auth: str | None) -> AppConfig:
    return AppConfig(
        name=alias,
        alias=alias,
        shape=AppShape.DIRECT_SERVER,
        project_root=Path("."),
        auth=auth,
        scaling=ScalingConfig(),
    )


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    config_dir = tmp_path_factory.mktemp("falemu-config")
    old = os.environ.get("FALEMU_CONFIG_DIR")
    os.environ["FALEMU_CONFIG_DIR"] = str(config_dir)  # the CLI and the gateway share keys and CA here
    events = EventBus()
    servers: list[ThreadedServer] = []
    probes: dict[str, Probe] = {}
    pools: dict[str, StaticPool] = {}
    apps = {}
    try:
        for alias, auth in (("echo", None), ("open", "public")):
            runner_id = f"{alias}-0"

            def on_log(line: str, alias: str = alias, runner_id: str = runner_id) -> None:
                events(RunnerLog(alias, runner=runner_id, line=line))

            probe = Probe(runner_id, on_log=on_log)
            server = ThreadedServer(probe).start()
            servers.append(server)
            probes[alias] = probe
            config = _config(alias, auth)
            pools[alias] = StaticPool(config, [Runner(id=runner_id, app=alias, host="127.0.0.1", port=server.port)])
            apps[alias] = GatewayApp(config, pools[alias])
        gateway = create_app(apps, settings=Settings(), events=events, keys=KeyStore(user="local"))
        options = gateway_server_options()
        tls_server = ThreadedServer(gateway, server_class=GatewayServer, loop_factory=new_event_loop, **options)
        servers.append(tls_server.start())

        result = CliRunner().invoke(cli, ["env", "--port", str(tls_server.port)])
        assert result.exit_code == 0, result.output
        env = {k: v for k, v in os.environ.items() if not k.startswith("FAL_")}
        for line in result.stdout.splitlines():
            name, _, value = line.removeprefix("export ").partition("=")
            env[name] = value.strip("'")
        assert env["FAL_RUN_HOST"] == f"127.0.0.1:{tls_server.port}"
        assert env["FAL_QUEUE_RUN_HOST"] == f"127.0.0.1:{tls_server.port}/queue"
        yield Setup(env=env, probes=probes, pools=pools, config_dir=config_dir)
    finally:
        for server in reversed(servers):
            server.stop()
        if old is None:
            os.environ.pop("FALEMU_CONFIG_DIR", None)
        else:
            os.environ["FALEMU_CONFIG_DIR"] = old


def run_client(setup: Setup, code: str, **env: str) -> Any:
    """Run ``code`` with fal_client imported under falemu's exports; returns what it prints as JSON."""
    script = "import json, fal_client\n" + textwrap.dedent(code)
    proc = subprocess.run(
        [sys.executable, "-c", script],
        env={**setup.env, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_fal_client_version_is_the_pinned_one(setup: Setup) -> None:
    assert run_client(setup, "import importlib.metadata as m; print(json.dumps(m.version('fal-client')))") == "1.0.3"


def test_run(setup: Setup) -> None:
    out = run_client(
        setup,
        """
        result = fal_client.run("local/echo/generate", arguments={"prompt": "a cat"})
        print(json.dumps(result))
        """,
    )
    assert out["method"] == "POST"
    assert out["path"] == "/generate"
    assert json.loads(out["body"]) == {"prompt": "a cat"}
    assert out["headers"]["x-fal-endpoint"] == "local/echo/generate"
    assert out["headers"]["x-fal-caller-user-id"] == "local"
    assert out["headers"]["user-agent"].startswith("fal-client/")


def test_submit_status_with_logs_then_result(setup: Setup) -> None:
    out = run_client(
        setup,
        """
        handle = fal_client.submit("local/echo/log", arguments={"line": "warming up"})
        statuses = []
        for status in handle.iter_events(with_logs=True, interval=0.05):
            statuses.append(type(status).__name__)
        last = handle.status(with_logs=True)
        print(json.dumps({
            "id": handle.request_id,
            "statuses": statuses,
            "logs": [entry["message"] for entry in last.logs],
            "metrics": last.metrics,
            "result": handle.get(),
            "by_id": fal_client.result("local/echo", handle.request_id),
            "status_by_id": type(fal_client.status("local/echo", handle.request_id, with_logs=True)).__name__,
        }))
        """,
    )
    assert out["statuses"][-1] == "Completed"
    assert [json.loads(line) for line in out["logs"]] == [{"line": "warming up"}]
    assert out["metrics"]["inference_time"] >= 0
    assert out["result"] == {"ok": True, "runner": "echo-0"}
    assert out["by_id"] == out["result"]
    assert out["status_by_id"] == "Completed"


def test_subscribe_with_queue_updates(setup: Setup) -> None:
    out = run_client(
        setup,
        """
        updates = []
        enqueued = []
        result = fal_client.subscribe(
            "local/echo/subscribed",
            arguments={"x": 1},
            with_logs=True,
            on_enqueue=enqueued.append,
            on_queue_update=lambda s: updates.append(type(s).__name__),
        )
        print(json.dumps({"result": result, "updates": updates, "enqueued": enqueued}))
        """,
    )
    assert out["result"]["path"] == "/subscribed"
    assert out["updates"][-1] == "Completed"
    assert len(out["enqueued"]) == 1


def test_cancel_forwards_to_the_runner(setup: Setup) -> None:
    out = run_client(
        setup,
        """
        import time
        handle = fal_client.submit("local/echo/slow", arguments={})
        while not isinstance(handle.status(), fal_client.InProgress):
            time.sleep(0.05)
        handle.cancel()
        while not isinstance(status := handle.status(), fal_client.Completed):
            time.sleep(0.05)
        try:
            handle.get()
            error = None
        except fal_client.client.FalClientHTTPError as exc:
            error = {"status": exc.status_code, "message": exc.message}
        print(json.dumps({"id": handle.request_id, "error": error, "error_type": status.error_type}))
        """,
    )
    assert out["error"] == {"status": 499, "message": "cancelled"}
    assert out["error_type"] == "client_cancelled"
    cancels = [c for c in setup.probes["echo"].calls if c["path"] == "/slow/cancel"]
    assert [c["headers"]["x-fal-request-id"] for c in cancels] == [out["id"]]


def test_cancel_of_a_queued_request_by_id(setup: Setup) -> None:
    out = run_client(
        setup,
        """
        import time
        blocker = fal_client.submit("local/open/slow", arguments={})
        while not isinstance(blocker.status(), fal_client.InProgress):
            time.sleep(0.05)
        queued = fal_client.submit("local/open/never", arguments={})
        position = queued.status().position
        fal_client.cancel("local/open", queued.request_id)
        blocker.cancel()
        final = queued.status()
        print(json.dumps({"position": position, "final": type(final).__name__, "error_type": final.error_type}))
        """,
    )
    assert out == {"position": 0, "final": "Completed", "error_type": "client_cancelled"}
    assert not [c for c in setup.probes["open"].calls if c["path"] == "/never"]


def test_stream(setup: Setup) -> None:
    out = run_client(
        setup,
        """
        events = list(fal_client.stream("local/echo", arguments={"n": 3}, path="/stream"))
        print(json.dumps(events))
        """,
    )
    assert [e["i"] for e in out] == [0, 1, 2]


def test_async_client(setup: Setup) -> None:
    out = run_client(
        setup,
        """
        import asyncio
        async def main():
            result = await fal_client.run_async("local/open/a", arguments={})
            handle = await fal_client.submit_async("local/open/b", arguments={})
            async for _ in handle.iter_events(interval=0.05):
                pass
            return [result["path"], (await handle.get())["path"]]
        print(json.dumps(asyncio.run(main())))
        """,
    )
    assert out == ["/a", "/b"]


def test_wrong_keys_are_refused(setup: Setup) -> None:
    code = """
        try:
            fal_client.run("local/{app}", arguments={{}})
            print(json.dumps(None))
        except fal_client.client.FalClientHTTPError as exc:
            print(json.dumps([exc.status_code, exc.message]))
        """
    expected = [401, "No user found for Key ID and Secret"]
    wrong = "00000000-0000-0000-0000-000000000000:wrong"
    assert run_client(setup, code.format(app="echo"), FAL_KEY=wrong) == expected
    assert run_client(setup, code.format(app="open"), FAL_KEY=wrong) == expected  # a bad key is bad anywhere


def test_ws_connect_without_jwt(setup: Setup) -> None:
    out = run_client(
        setup,
        """
        with fal_client.ws_connect("local/echo", use_jwt=False, path="/ws") as ws:
            hello = json.loads(ws.recv())
            ws.send("hi")
            echoed = ws.recv()
        print(json.dumps({"path": hello["path"], "user": hello["headers"]["x-fal-caller-user-id"], "echo": echoed}))
        """,
    )
    assert out == {"path": "/ws", "user": "local", "echo": "echo-0: hi"}
