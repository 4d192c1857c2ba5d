"""The dashboard on an Emulator with the FakeRuntime: real gateway, real HTTP, the JSON API, /metrics,
the Origin check, replay, and `falemu report --json` equal to the plugin's report."""

from __future__ import annotations

import concurrent.futures
import gc
import json
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from falemu import state
from falemu.cli import cli as cli_main
from falemu.config.model import AppConfig, AppShape, Project, ScalingConfig
from falemu.config.settings import Settings
from falemu.dashboard import YOUNG_GENERATION
from falemu.dashboard import report as report_mod
from falemu.dashboard.views import NO_RUNNER_YET
from falemu.emulator import Emulator
from falemu.runtime.fake import FakeRuntime


def nearest_rank(values: list[float], p: int) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1]


@pytest.fixture
def emu(tmp_path: Path, isolated_home: Path) -> Iterator[Emulator]:
    apps = {
        "greeter": AppConfig(
            name="greeter",
            alias="greeter",
            shape=AppShape.DIRECT_SERVER,
            project_root=tmp_path,
            exposed_port=8000,
            auth="private",
            machine_types=("GPU-H100",),
            scaling=ScalingConfig(keep_alive=30),
        )
    }
    project = Project(root=tmp_path, pyproject=tmp_path / "pyproject.toml", apps=apps)
    with Emulator(project, Settings(port=0, data_dir=isolated_home / "data"), runtime=FakeRuntime()) as e:
        yield e


@pytest.fixture
def client(emu: Emulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=emu.base_url, headers={"authorization": f"Key {emu.api_key}"}, timeout=30) as c:
        yield c


def wait_done(client: httpx.Client, count: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        rows = client.get("/_falemu/api/requests", params={"limit": 1000}).json()["requests"]
        if len(rows) >= count and all(r["state"] == "done" for r in rows):
            return rows  # type: ignore[no-any-return]
        time.sleep(0.05)
    raise AssertionError("requests did not finish")


def test_history_analytics_errors_and_metrics_from_real_requests(emu: Emulator, client: httpx.Client) -> None:
    for i in range(6):
        assert client.post("/local/greeter/echo", json={"i": i, "sleep": 0.01 * i}).status_code == 200
    assert client.post("/local/greeter/echo?status=500", json={"boom": 1}).status_code == 500
    assert client.post("/local/greeter/echo?status=422", json={"bad": 1}).status_code == 422
    queued = client.post("/queue/local/greeter/echo", json={"q": 1}).json()["request_id"]
    rows = wait_done(client, 9)
    assert {r["mode"] for r in rows} == {"sync", "queue"}
    assert all(r["endpoint"] == "/echo" and r["method"] == "POST" for r in rows)

    app = client.get("/_falemu/api/overview").json()["apps"][0]
    assert (app["requests_last_hour"], app["success_rate_last_hour"]) == (9, pytest.approx(7 / 9))
    first = client.get("/_falemu/api/requests", params={"limit": 5}).json()
    older = client.get("/_falemu/api/requests", params={"limit": 5, "older_than": first["requests"][-1]["seq"]}).json()
    assert (first["matched"], older["matched"]) == (9, 4)
    assert [r["id"] for r in first["requests"] + older["requests"]] == [r["id"] for r in rows]

    summary = client.get("/_falemu/api/analytics", params={"app": "greeter"}).json()["summary"]
    ok = [r for r in rows if r["status"] == 200]
    assert (summary["total"], summary["success"], summary["client_errors"], summary["server_errors"]) == (9, 7, 1, 1)
    for p in (50, 75, 90, 95):
        assert summary["execution"][f"p{p}"] == pytest.approx(nearest_rank([r["execution"] for r in ok], p), abs=2e-6)
        assert summary["startup"][f"p{p}"] == pytest.approx(nearest_rank([r["queue_wait"] for r in rows], p), abs=2e-6)

    errors = client.get("/_falemu/api/errors").json()
    groups = {(g["error_type"], g["status"]) for g in errors["groups"]}
    assert groups == {("runner_server_error", 500), ("user_error", 422)}
    failed = next(g for g in errors["groups"] if g["status"] == 500)["request_ids"][0]
    detail = client.get(f"/_falemu/api/requests/{failed}").json()
    assert detail["input"]["json"] == {"boom": 1}
    assert detail["output"]["json"]["path"] == "/echo"
    assert any("POST /echo" in line["message"] for line in detail["logs_around"])

    result = client.get(f"/_falemu/api/requests/{queued}/result").json()
    assert result["status"] == 200
    assert result["output"]["json"]["body"] == {"q": 1}

    metrics = client.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    text = metrics.text
    assert 'fal_app_runners{app="greeter",state="idle",machine_type="GPU-H100"} 1' in text
    assert 'fal_app_requests_received{app="greeter"} 9' in text
    assert 'fal_app_requests_completed{app="greeter",method="POST",status="500"} 1' in text
    assert 'fal_app_request_latency_count{app="greeter"} 9' in text
    assert "fal_app_queue_size" in text
    assert "fal_app_concurrent_requests" in text

    # no key or secret in anything the API or the page serves
    dumped = json.dumps([client.get(p).json() for p in ("/_falemu/api/overview", "/_falemu/api/requests")])
    assert emu.api_key is not None
    assert emu.api_key.split(":")[-1] not in dumped
    assert emu.api_key.split(":")[-1] not in client.get("/").text


def test_playground_and_replay_go_through_the_gateway_with_the_local_key(emu: Emulator, client: httpx.Client) -> None:
    anonymous = httpx.Client(base_url=emu.base_url, timeout=30)  # the page has no key: the app is private
    assert anonymous.post("/local/greeter/echo", json={}).status_code == 401
    run = anonymous.post(
        "/_falemu/api/playground/run", json={"app": "greeter", "endpoint": "/echo", "input": {"a": 1}, "mode": "sync"}
    )
    assert run.status_code == 200, run.text
    assert run.json()["status"] == 200
    assert run.json()["output"]["json"]["body"] == {"a": 1}
    queued = anonymous.post(
        "/_falemu/api/playground/run", json={"app": "greeter", "endpoint": "/echo", "input": {"b": 2}}
    )
    rid = queued.json()["request_id"]
    wait_done(client, 2)
    replay = anonymous.post(f"/_falemu/api/requests/{rid}/replay", json={})
    assert replay.status_code == 200, replay.text
    wait_done(client, 3)
    again = anonymous.get(f"/_falemu/api/requests/{replay.json()['request_id']}").json()
    assert again["input"]["json"] == {"b": 2}
    assert again["mode"] == "queue"

    # state-changing calls refuse other origins and non-JSON bodies
    evil = anonymous.post(
        "/_falemu/api/playground/run", json={"app": "greeter"}, headers={"origin": "http://evil.test"}
    )
    assert evil.status_code == 403
    cross = anonymous.post(
        "/_falemu/api/playground/run", json={"app": "greeter"}, headers={"sec-fetch-site": "cross-site"}
    )
    assert cross.status_code == 403
    form = anonymous.post("/_falemu/api/playground/run", content=b"app=greeter", headers={"content-type": "text/plain"})
    assert form.status_code == 415
    assert anonymous.get("/_falemu/api/playground/run").status_code == 405


def test_report_cli_and_plugin_report_give_the_same_figures(
    emu: Emulator, client: httpx.Client, tmp_path: Path
) -> None:
    for i in range(4):
        client.post("/local/greeter/echo", json={"i": i})
    client.post("/local/greeter/echo?status=503", json={})
    wait_done(client, 5)
    path = state.register(emu)
    try:
        since, until = time.time() - 600, time.time()
        out = CliRunner().invoke(cli_main, ["report", "--json", "--since", str(since), "--until", str(until)])
        assert out.exit_code == 0, out.output
        from_cli = json.loads(out.output)
        assert emu.dashboard is not None
        report_file = tmp_path / "report.json"
        report_mod.write(report_file, report_mod.combined([emu.dashboard.board], since=since, until=until))
        from_plugin = json.loads(report_file.read_text())
        assert from_cli == from_plugin
        (app,) = from_cli["apps"]
        assert app["summary"]["total"] == 5
        assert app["summary"]["server_errors"] == 1
        assert app["advisor"]["requests"] == 5
        text = CliRunner().invoke(cli_main, ["report", "--since", str(since), "--until", str(until)])
        assert "greeter (GPU-H100)" in text.output
        assert "keep_alive advisor" in text.output
        html_file = tmp_path / "report.html"
        report_mod.write(html_file, report_mod.combined([emu.dashboard.board], since=since, until=until))
        assert "<h1>falemu report</h1>" in html_file.read_text()
    finally:
        state.unregister(path)


def test_page_and_assets_are_served_from_the_package(client: httpx.Client) -> None:
    page = client.get("/")
    assert page.status_code == 200
    assert 'src="/_falemu/dashboard/app.js"' in page.text
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    js = client.get("/_falemu/dashboard/vendor/preact-htm.mjs")
    assert js.status_code == 200
    assert js.headers["content-type"].startswith("text/javascript")
    assert client.get("/_falemu/dashboard/../../__init__.py").status_code == 404
    assert client.get("/_falemu/dashboard/nothing.js").status_code == 404
    spec = client.get("/_falemu/api/openapi.json").json()
    assert "/_falemu/api/requests" in spec["paths"]
    assert "/_falemu/api/advisor/{app}" in spec["paths"]


def test_playground_uploads_go_to_the_local_cdn(emu: Emulator) -> None:
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
    with httpx.Client(base_url=emu.base_url, timeout=30) as page:  # no key, as the page
        caps = page.get("/_falemu/api/capabilities").json()
        assert caps["uploads"] == "cdn"
        up = page.post(
            "/_falemu/api/uploads", params={"file_name": "in.png"}, content=png, headers={"content-type": "image/png"}
        )
        assert up.status_code == 200, up.text
        fetched = httpx.get(up.json()["file_url"], timeout=30)
        assert fetched.content == png
        assert fetched.headers["content-type"] == "image/png"
        cross = page.post("/_falemu/api/uploads", content=png, headers={"origin": "http://evil.test"})
        assert cross.status_code == 403


def test_the_api_is_built_on_its_first_request_or_ahead_by_warm_up(emu: Emulator, client: httpx.Client) -> None:
    dashboard = emu.dashboard
    assert dashboard is not None
    assert dashboard.api is not None
    assert not dashboard.api.built  # FastAPI's import is not part of the emulator's start
    # Concurrent first requests all wait for the one build, and all get the API's answer.
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: client.get("/_falemu/api/requests"), range(4)))
    assert [a.status_code for a in answers] == [200] * 4
    assert all(a.json()["requests"] == [] for a in answers)
    assert dashboard.api.built

    other = Emulator(emu.project, emu.settings, runtime=FakeRuntime())
    with other:
        assert other.dashboard is not None
        assert other.dashboard.api is not None
        other.warm_up()  # what `falemu up` does once it is ready
        other.dashboard.api.settle(60)
        assert other.dashboard.api.built


def test_the_playground_keeps_the_apps_document_after_its_runners_scaled_to_zero(
    emu: Emulator, client: httpx.Client
) -> None:
    # min_concurrency 0 and no warm runner: nothing could be asked yet, which is not "serves no document"
    first = client.get("/_falemu/api/apps/greeter/openapi").json()
    assert first["available"] is False
    assert first["message"] == NO_RUNNER_YET

    assert client.post("/local/greeter/echo", json={"a": 1}).status_code == 200  # a runner starts
    served = client.get("/_falemu/api/apps/greeter/openapi").json()
    assert served["available"] is True
    assert "/echo" in served["document"]["paths"]

    emu.expire_idle("greeter")  # keep_alive runs out: the app has no runner now, as on fal after idling
    deadline = time.monotonic() + 10
    while emu.runners("greeter") and time.monotonic() < deadline:
        time.sleep(0.02)
    assert emu.runners("greeter") == []
    kept = client.get("/_falemu/api/apps/greeter/openapi").json()
    assert kept == served  # the last document a runner gave: the Playground still has its form


def test_the_collector_looks_at_new_objects_less_often_only_with_the_dashboard(
    tmp_path: Path, isolated_home: Path
) -> None:
    config = AppConfig(name="app", alias="app", shape=AppShape.DIRECT_SERVER, project_root=tmp_path, exposed_port=8000)
    project = Project(root=tmp_path, pyproject=tmp_path / "pyproject.toml", apps={"app": config})
    before = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)
        off = Settings(port=0, data_dir=isolated_home / "data", dashboard=False)
        with Emulator(project, off, runtime=FakeRuntime()) as emulator:
            assert emulator.dashboard is None
            assert gc.get_threshold() == (700, 10, 10)
        with Emulator(project, Settings(port=0, data_dir=isolated_home / "data"), runtime=FakeRuntime()) as emulator:
            assert emulator.dashboard is not None
            assert gc.get_threshold() == (YOUNG_GENERATION, 10, 10)
    finally:
        gc.set_threshold(*before)
