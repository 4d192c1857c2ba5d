"""Fault injection through the Emulator on the FakeRuntime: the real gateway (its own HTTP protocol, so
the fast path too), the queue, the controller and the admin routes; ``falemu chaos`` through click."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from falemu import state
from falemu.cli import cli
from falemu.clock import WarpClock
from falemu.config.model import AppConfig, AppShape, Project, ScalingConfig
from falemu.config.settings import Settings
from falemu.emulator import Emulator
from falemu.errors import UsageError
from falemu.events import Event, FaultApplied, FaultEnded, FaultStarted, RunnerFailed, RunnerStopped
from falemu.runtime.fake import FakeRuntime
from falemu.testing import AppHandle, wait_until


def make_project(tmp_path: Path) -> Project:
    app = AppConfig(
        name="greeter",
        alias="greeter",
        shape=AppShape.DIRECT_SERVER,
        project_root=tmp_path,
        exposed_port=8000,
        auth="public",
        scaling=ScalingConfig(keep_alive=300, max_concurrency=2, startup_timeout=30),
    )
    return Project(root=tmp_path, pyproject=tmp_path / "pyproject.toml", apps={"greeter": app})


@pytest.fixture
def emu(tmp_path: Path, isolated_home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Emulator]:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(isolated_home / "run"))
    runtime = FakeRuntime()
    emulator = Emulator(
        make_project(tmp_path),
        Settings(port=0, data_dir=isolated_home / "data"),
        runtime=runtime,
        warm=True,
        clock=WarpClock(),
    )
    with emulator:
        yield emulator
    assert runtime.running() == []


@pytest.fixture
def app(emu: Emulator) -> Iterator[AppHandle]:
    handle = AppHandle(emu, "greeter")
    yield handle
    handle.end_faults()
    handle.close()


def kinds(emu: Emulator, kind: type[Event]) -> list[Any]:
    return [e for e in emu.events.history if isinstance(e, kind)]


def wait_released(emu: Emulator) -> None:
    wait_until(lambda: not any(r.in_flight for r in emu.runners()), timeout=10, what="leases released")


def test_an_error_storm_answers_fals_error_then_ends_and_the_fast_path_is_back(emu: Emulator, app: AppHandle) -> None:
    gateway = emu.gateway
    assert gateway is not None
    assert app.request("POST", "/echo", json={}).status_code == 200
    fast = gateway.fast_requests
    assert fast > 0
    storm = app.faults.error(503, count=2)
    assert gateway.faults is not None
    for _ in range(2):
        response = app.request("POST", "/echo", json={})
        assert response.status_code == 503
        assert response.json() == {
            "detail": "No runner could be allocated to handle the request (fault f1, falemu chaos)",
            "error_type": "runner_scheduling_failure",
        }
        assert response.headers["x-fal-error-type"] == "runner_scheduling_failure"
        assert response.headers["x-fal-request-id"]
    assert gateway.fast_requests == fast  # while a request fault is in effect, the ASGI path answers
    assert storm.ended
    assert storm.end_reason == "count"
    assert gateway.faults is None  # nothing in effect: one attribute check per request again
    assert app.request("POST", "/echo", json={}).status_code == 200
    assert gateway.fast_requests == fast + 1
    (started,) = kinds(emu, FaultStarted)
    assert (started.fault, started.fault_kind) == ("f1", "error")
    assert len(kinds(emu, FaultApplied)) == 2
    (ended,) = kinds(emu, FaultEnded)
    assert (ended.reason, ended.applied) == ("count", 2)
    assert len(emu.runners()) == 1  # no runner was replaced: the gateway answered, not a runner


def test_a_share_of_requests_and_a_window(emu: Emulator, app: AppHandle) -> None:
    storm = app.faults.error(429, share=0.5, count=3)
    statuses = [app.request("POST", "/echo", json={}).status_code for _ in range(7)]
    assert statuses == [200, 429, 200, 429, 200, 429, 200]
    assert storm.end_reason == "count"
    window = app.faults.latency(0.01, seconds=0.3)
    window.wait_ended(timeout=10)  # ends on time with no request at all
    assert window.end_reason == "window"
    assert app.request("POST", "/echo", json={}).status_code == 200


def test_queued_requests_are_retried_after_injected_503_and_504_unless_no_retry(emu: Emulator, app: AppHandle) -> None:
    app.faults.error(503, count=2)
    handle = app.submit("/echo", {"n": 1})
    assert handle.result(timeout=20)["body"] == {"n": 1}
    app.faults.error(504, count=1)
    assert app.submit("/echo", {"n": 2}).result(timeout=20)["body"] == {"n": 2}
    app.faults.error(503, count=1)
    refused = app.submit("/echo", {"n": 3}, headers={"x-fal-no-retry": "1"})
    status = refused.wait(timeout=20)
    assert status["error_type"] == "runner_scheduling_failure"
    assert app.client.get(refused.response_url).status_code == 503


def test_latency_delays_requests(emu: Emulator, app: AppHandle) -> None:
    app.faults.latency(0.4, count=1)
    began = time.monotonic()
    assert app.request("POST", "/echo", json={}).status_code == 200
    assert time.monotonic() - began >= 0.4
    began = time.monotonic()
    assert app.request("POST", "/echo", json={}).status_code == 200
    assert time.monotonic() - began < 0.4


def test_a_cut_connection_leaves_the_caller_an_incomplete_answer(emu: Emulator, app: AppHandle) -> None:
    app.faults.cut(after_bytes=10, count=1)
    with pytest.raises(httpx.RemoteProtocolError):
        app.request("POST", "/echo", json={"pad": "x" * 200})
    wait_released(emu)
    assert app.request("POST", "/echo", json={}).status_code == 200
    assert len(emu.runners()) == 1  # the runner is kept: the connection broke, not the runner
    app.faults.cut(after_bytes=10, count=1)
    assert app.submit("/echo", {"n": 1}).result(timeout=20)["body"] == {"n": 1}  # the queue retried it


def test_kill_a_named_runner_and_the_runner_of_the_next_request(emu: Emulator, app: AppHandle) -> None:
    (first,) = emu.runners()
    fault = app.faults.kill(first.id)
    assert fault.ended
    assert fault.targets == [first.id]
    wait_until(lambda: first.id not in [r.id for r in emu.runners()], timeout=10, what="the killed runner gone")
    failed = [e for e in kinds(emu, RunnerFailed) if e.runner == first.id]
    assert failed[0].error_type == "runner_disconnected"
    assert "killed by fault f1" in failed[0].message
    assert [e.reason for e in kinds(emu, RunnerStopped) if e.runner == first.id] == ["killed"]
    # The runner that takes the next request dies (mid-request on Docker: tests/integration/test_chaos_docker.py).
    nxt = app.faults.kill()
    response = app.request("POST", "/echo", json={})
    assert response.status_code in (200, 503)  # the fake runner may answer before it dies
    assert nxt.ended
    (victim,) = nxt.targets
    wait_until(lambda: victim not in [r.id for r in emu.runners()], timeout=10, what="the runner gone")
    assert app.run("/echo", {})["runner"] != victim  # a new runner serves


def test_failed_starts_lead_to_fals_back_off_and_clearing_lifts_it(emu: Emulator, app: AppHandle) -> None:
    clock = emu.clock
    assert isinstance(clock, WarpClock)
    (runner,) = emu.runners()
    fails = app.faults.fail_starts(2)
    app.faults.kill(runner.id)
    wait_until(lambda: not emu.runners(), timeout=10, what="no runner")
    response = app.request("POST", "/echo", json={})
    assert response.status_code == 503
    assert "setup()" in response.json()["detail"]
    backoff = emu.controller("greeter").backoff()
    assert backoff is not None
    assert backoff["failures"] == 1
    clock.advance(31)
    assert app.request("POST", "/echo", json={}).status_code == 503
    assert fails.ended
    ps = httpx.get(emu.base_url + "/_falemu/ps", headers={state.ADMIN_HEADER: emu.admin_token}, timeout=5).json()
    assert ps["apps"][0]["backoff"]["failures"] == 2
    assert ps["apps"][0]["backoff"]["retry_in"] > 30
    assert len([e for e in kinds(emu, RunnerFailed) if "fault f1" in e.message]) == 2  # f2 was the kill
    # The count ran out: the back-off stays (it is fal's); clearing the faults lifts it.
    app.faults.clear()
    assert emu.controller("greeter").backoff() is None
    assert app.request("POST", "/echo", json={}).status_code == 200


def test_data_faults_need_the_docker_runtime(emu: Emulator, app: AppHandle) -> None:
    with pytest.raises(UsageError, match="cannot make /data read-only or full"):
        app.faults.data("read-only")


def test_end_faults_ends_what_a_test_added(emu: Emulator, app: AppHandle) -> None:
    app.faults.error(503, seconds=60)
    app.faults.latency(1, seconds=60)
    assert len(app.faults.active()) == 2
    app.end_faults()
    assert app.faults.active() == []
    assert emu.gateway is not None
    assert emu.gateway.faults is None
    assert {e.reason for e in kinds(emu, FaultEnded)} == {"cleared"}


def test_falemu_chaos_from_another_terminal(emu: Emulator, app: AppHandle) -> None:
    path = state.register(emu)
    try:
        runner = CliRunner()
        result = runner.invoke(cli, ["chaos", "error", "greeter", "--status", "504", "--count", "1"])
        assert result.exit_code == 0, result.output
        assert result.output.startswith("f1: the gateway answers 504 (request_timeout) (1 request)")
        listed = runner.invoke(cli, ["chaos", "list", "--json"])
        (row,) = json.loads(listed.output)
        assert (row["id"], row["remaining"], row["ended"]) == ("f1", 1, None)
        ps = runner.invoke(cli, ["ps"])
        assert "greeter: fault f1: the gateway answers 504" in ps.output
        assert app.request("POST", "/echo", json={}).status_code == 504
        bad = runner.invoke(cli, ["chaos", "error", "greeter", "--status", "503", "--type", "request_timeout"])
        assert bad.exit_code == 2
        assert "error: request_timeout is not fal's error type for 503" in bad.output
        assert "hint: for 503: runner_scheduling_failure" in bad.output
        unknown = runner.invoke(cli, ["chaos", "kill", "nope"])
        assert unknown.exit_code == 2
        assert "no app nope in this falemu up" in unknown.output
        runner.invoke(cli, ["chaos", "latency", "greeter", "--delay", "500ms", "--seconds", "1m"])
        cleared = runner.invoke(cli, ["chaos", "clear"])
        assert cleared.output.strip() == "cleared 1 fault(s): f2"
        unauthorized = httpx.get(emu.base_url + "/_falemu/chaos", timeout=5)
        assert unauthorized.status_code == 401
    finally:
        state.unregister(path)
    nobody = CliRunner().invoke(cli, ["chaos", "list"])
    assert nobody.exit_code == 2
    assert "no falemu up is running" in nobody.output


def test_slow_starts_and_fals_startup_timeout(tmp_path: Path, isolated_home: Path) -> None:
    project = make_project(tmp_path)
    overrides = {"greeter": {"startup_timeout": 1}}
    with Emulator(
        project, Settings(port=0, data_dir=isolated_home / "data"), runtime=FakeRuntime(), overrides=overrides
    ) as emu:
        app = AppHandle(emu, "greeter")
        try:
            app.faults.slow_starts(0.3)
            began = time.monotonic()
            assert app.request("POST", "/echo", json={}).status_code == 200  # a cold start, 0.3 s slower
            assert time.monotonic() - began >= 0.3
            app.expire_idle()
            app.faults.slow_starts(5)  # past startup_timeout (1 s): fal's startup_timeout failure
            began = time.monotonic()
            response = app.request("POST", "/echo", json={})
            assert response.status_code == 504
            assert response.json()["error_type"] == "startup_timeout"
            assert 0.9 <= time.monotonic() - began < 4
            failed = kinds(emu, RunnerFailed)[-1]
            assert failed.error_type == "startup_timeout"
        finally:
            app.end_faults()
            app.close()
