"""The Emulator facade on the FakeRuntime: real gateway, real uvicorn, real HTTP runners in-process."""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from falemu.config.model import AppConfig, AppShape, Project, ScalingConfig
from falemu.config.settings import Settings
from falemu.emulator import Emulator
from falemu.errors import RunnerError, UsageError
from falemu.events import RunnerReady, RunnerStateChanged, RunnerStopped
from falemu.runtime.fake import FakeRuntime
from falemu.state import ADMIN_HEADER


def make_project(tmp_path: Path, **scaling: Any) -> Project:
    apps = {
        name: AppConfig(
            name=name,
            alias=name,
            shape=AppShape.DIRECT_SERVER,
            project_root=tmp_path,
            exposed_port=8000,
            auth="public",
            scaling=ScalingConfig(**scaling),
        )
        for name in ("greeter", "other")
    }
    return Project(root=tmp_path, pyproject=tmp_path / "pyproject.toml", apps=apps)


@pytest.fixture
def settings(isolated_home: Path) -> Settings:
    return Settings(port=0, data_dir=isolated_home / "data")


def idle(emu: Emulator) -> None:
    """Wait until the gateway released every lease (it does so just after the response is sent)."""
    deadline = time.monotonic() + 10
    while any(r.in_flight for r in emu.runners()) and time.monotonic() < deadline:
        time.sleep(0.01)


def live_threads() -> set[str]:
    return {t.name for t in threading.enumerate() if t.name.startswith(("falemu", "fake-"))}


@pytest.fixture
def emulator(tmp_path: Path, settings: Settings) -> Iterator[Emulator]:
    runtime = FakeRuntime()
    emu = Emulator(make_project(tmp_path, keep_alive=300), settings, apps=["greeter"], runtime=runtime)
    with emu:
        yield emu
    assert runtime.running() == []


def test_requests_through_the_gateway_cold_start_a_runner(emulator: Emulator) -> None:
    assert emulator.runners() == []
    assert emulator.base_url.startswith("http://127.0.0.1:")
    assert emulator.port != 0
    response = httpx.post(emulator.app_url("greeter") + "/echo?x=1", json={"a": 1}, timeout=10)
    assert response.status_code == 200
    idle(emulator)
    body = response.json()
    assert body["path"] == "/echo"
    assert body["body"] == {"a": 1}
    (runner,) = emulator.runners("greeter")
    assert body["runner"] == runner.id
    assert runner.served == 1
    assert [e.cold_start for e in emulator.events.history if isinstance(e, RunnerReady)] == [True]


def test_requests_take_the_gateways_fast_path_cold_and_warm(emulator: Emulator) -> None:
    first = httpx.post(emulator.app_url("greeter") + "/echo", json={}, timeout=10)  # cold: waits for the runner
    idle(emulator)
    second = httpx.post(emulator.app_url("greeter") + "/echo", json={"n": 2}, timeout=10)
    assert (first.status_code, second.status_code) == (200, 200)
    assert second.json()["body"] == {"n": 2}
    assert emulator.gateway is not None
    assert emulator.gateway.fast_requests == 2
    token = {ADMIN_HEADER: emulator.admin_token}
    assert httpx.get(emulator.base_url + "/_falemu/ps", headers=token, timeout=10).status_code == 200


def test_expire_idle_makes_the_next_request_a_cold_start(emulator: Emulator) -> None:
    first = httpx.post(emulator.app_url("greeter") + "/echo", json={}, timeout=10).json()["runner"]
    idle(emulator)
    emulator.expire_idle("greeter")
    assert emulator.runners("greeter") == []
    stopped = [e for e in emulator.events.history if isinstance(e, RunnerStopped)]
    assert [(e.runner, e.reason) for e in stopped] == [(first, "keep_alive")]
    second = httpx.post(emulator.app_url("greeter") + "/echo", json={}, timeout=10).json()["runner"]
    assert second != first
    assert emulator.controller("greeter").stats.cold_starts == 2


def test_queue_url_serves_the_queue_api(emulator: Emulator) -> None:
    assert emulator.queue_url("greeter") == f"{emulator.base_url}/queue/local/greeter"
    submitted = httpx.post(emulator.queue_url("greeter") + "/echo", json={"q": 1}, timeout=10)
    assert submitted.status_code in (200, 202)
    urls = submitted.json()
    for _ in range(200):
        status = httpx.get(urls["status_url"], timeout=10)
        if status.json()["status"] == "COMPLETED":
            break
        time.sleep(0.02)
    result = httpx.get(urls["response_url"], timeout=10).json()
    assert result["body"] == {"q": 1}


def test_admin_routes_need_the_token(emulator: Emulator) -> None:
    assert httpx.get(emulator.base_url + "/_falemu/ps", timeout=10).status_code == 401
    httpx.post(emulator.app_url("greeter") + "/echo", json={}, timeout=10)
    idle(emulator)
    headers = {ADMIN_HEADER: emulator.admin_token}
    ps = httpx.get(emulator.base_url + "/_falemu/ps", headers=headers, timeout=10).json()
    (app,) = ps["apps"]
    assert app["name"] == "greeter"
    assert app["url"] == emulator.app_url("greeter")
    assert [r["state"] for r in app["runners"]] == ["IDLE"]
    assert app["stats"]["cold_starts"] == 1
    logs = httpx.get(emulator.base_url + "/_falemu/logs?app=greeter", headers=headers, timeout=10)
    lines = [line for line in logs.text.splitlines() if line]
    assert lines
    assert all('"RunnerLog"' in line for line in lines)
    missing = httpx.get(emulator.base_url + "/_falemu/logs?app=nope", headers=headers, timeout=10)
    assert missing.status_code == 404


def test_warm_start_and_min_concurrency(tmp_path: Path, settings: Settings) -> None:
    runtime = FakeRuntime()
    project = make_project(tmp_path, min_concurrency=2, max_concurrency=3)
    with Emulator(project, settings, runtime=runtime, warm=True) as emu:
        assert len(emu.runners("greeter")) == 2
        assert len(emu.runners("other")) == 2
        assert len(emu.runners()) == 4
        assert emu.openapi("greeter") is not None
    assert runtime.running() == []


def test_overrides_change_scaling_settings(tmp_path: Path, settings: Settings) -> None:
    project = make_project(tmp_path)
    with Emulator(
        project, settings, apps=["greeter"], runtime=FakeRuntime(), overrides={"greeter": {"keep_alive": 2}}
    ) as emu:
        assert emu.configs["greeter"].scaling.keep_alive == 2
    with pytest.raises(UsageError, match="keep_alivee"):
        Emulator(
            project, settings, apps=["greeter"], runtime=FakeRuntime(), overrides={"greeter": {"keep_alivee": 2}}
        ).start()


def test_stop_leaves_no_threads_or_port_behind(tmp_path: Path, settings: Settings) -> None:
    before = live_threads()
    runtime = FakeRuntime()
    emu = Emulator(make_project(tmp_path), settings, apps=["greeter"], runtime=runtime, warm=True)
    emu.start()
    port = emu.port
    httpx.post(emu.app_url("greeter") + "/echo", json={}, timeout=10)
    emu.stop()
    emu.stop()  # twice is fine
    assert runtime.running() == []
    assert live_threads() <= before
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/", timeout=2)


def test_port_in_use_is_a_usage_error(tmp_path: Path, settings: Settings) -> None:
    with Emulator(make_project(tmp_path), settings, apps=["greeter"], runtime=FakeRuntime()) as first:
        taken = Settings(port=first.port, data_dir=settings.data_dir)
        runtime = FakeRuntime()
        with pytest.raises(UsageError, match="cannot listen"):
            Emulator(make_project(tmp_path), taken, apps=["greeter"], runtime=runtime).start()
        assert runtime.running() == []


def test_unknown_app_is_a_usage_error(emulator: Emulator) -> None:
    with pytest.raises(UsageError):
        emulator.app_url("nope")


def test_a_failing_first_runner_fails_the_start_although_the_gateway_was_built_meanwhile(
    tmp_path: Path, settings: Settings
) -> None:
    before = live_threads()
    runtime = FakeRuntime(start_delay=0.5, fail_starts=1)
    emu = Emulator(make_project(tmp_path), settings, apps=["greeter"], runtime=runtime, warm=True)
    with pytest.raises(RunnerError, match="exited during start-up") as info:
        emu.start()
    assert info.value.logs == "fake start failure"  # the runner's own error and logs, not the gateway's
    assert emu.gateway is not None  # built while the runner started, then never served
    assert runtime.running() == []
    assert live_threads() <= before
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{emu.port}/", timeout=2)


def test_openapi_at_start_is_fetched_while_the_gateway_starts(tmp_path: Path, settings: Settings) -> None:
    project = make_project(tmp_path)
    with Emulator(project, settings, apps=["greeter"], runtime=FakeRuntime(), warm=True, openapi_at_start=True) as emu:
        asked: list[str] = []
        fetch = emu._runner_openapi
        emu._runner_openapi = lambda name, timeout: asked.append(name) or fetch(name, timeout)  # type: ignore[method-assign]
        document = emu.started_openapi("greeter")
        assert document is not None
        assert "/echo" in document["paths"]
        assert asked == []  # the runner was asked during start, not now
        assert emu.openapi("greeter") == document
        assert asked == ["greeter"]
    with Emulator(project, settings, apps=["greeter"], runtime=FakeRuntime(), warm=True) as emu:
        document = emu.started_openapi("greeter")  # not fetched at start: asked now
        assert document is not None
        assert "/echo" in document["paths"]


def test_stop_during_start_up_leaves_no_runner(
    tmp_path: Path, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="asyncio")
    runtime = FakeRuntime(start_delay=1.0)
    emu = Emulator(make_project(tmp_path), settings, apps=["greeter"], runtime=runtime, warm=True)
    errors: list[BaseException] = []

    def start() -> None:
        try:
            emu.start()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=start)
    thread.start()
    while not any(isinstance(e, RunnerStateChanged) and e.state == "SETUP" for e in emu.events.history):
        time.sleep(0.01)  # the warm runner's start is under way
    emu.stop()
    thread.join(30)
    assert not thread.is_alive()
    assert len(errors) == 1  # start() did not complete
    assert runtime.running() == []
    gc.collect()
    # every server task (the gateway's, the local CDN's) ended before its loop closed
    assert [r.getMessage() for r in caplog.records if "destroyed but it is pending" in r.getMessage()] == []


def test_logs_follow_streams_new_lines_and_ends_when_the_emulator_stops(tmp_path: Path, settings: Settings) -> None:
    emu = Emulator(make_project(tmp_path), settings, apps=["greeter"], runtime=FakeRuntime())
    emu.start()
    received: list[dict[str, Any]] = []
    connected = threading.Event()

    def follow() -> None:
        headers = {ADMIN_HEADER: emu.admin_token}
        url = emu.base_url + "/_falemu/logs?app=greeter&follow=1"
        with httpx.stream("GET", url, headers=headers, timeout=httpx.Timeout(10, read=None)) as response:
            connected.set()
            for line in response.iter_lines():
                if line:
                    received.append(json.loads(line))

    reader = threading.Thread(target=follow)
    reader.start()
    try:
        assert connected.wait(10)
        body = httpx.post(emu.app_url("greeter") + "/echo", json={}, timeout=10).json()
        deadline = time.monotonic() + 10
        while not any("/echo" in e["line"] for e in received) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        emu.stop()
    reader.join(30)
    assert not reader.is_alive()
    assert {e["runner"] for e in received} == {body["runner"]}
    assert any('"POST /echo' in e["line"] for e in received)


def test_keys_cli_revokes_at_once_in_a_running_emulator_of_another_owner(
    tmp_path: Path, isolated_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from falemu import state
    from falemu.cli import cli

    monkeypatch.setenv("XDG_RUNTIME_DIR", str(isolated_home / "run"))
    project = make_project(tmp_path, keep_alive=300)
    apps = {name: dataclasses.replace(config, auth="private") for name, config in project.apps.items()}
    project = dataclasses.replace(project, apps=apps)
    settings = Settings(port=0, data_dir=isolated_home / "data", owner="myteam")
    with Emulator(project, settings, apps=["greeter"], runtime=FakeRuntime()) as emu:
        path = state.register(emu)
        try:
            url = emu.app_url("greeter") + "/echo"
            assert url.split("/")[3:5] == ["myteam", "greeter"]
            assert (
                httpx.post(url, json={}, headers={"Authorization": f"Key {emu.api_key}"}, timeout=10).status_code == 200
            )
            made = CliRunner().invoke(cli, ["keys", "create", "--label", "ci"])
            assert made.exit_code == 0, made.output
            value = made.stdout.strip().removeprefix("FAL_KEY=")
            headers = {"Authorization": f"Key {value}"}
            assert httpx.post(url, json={}, headers=headers, timeout=10).status_code == 200
            revoked = CliRunner().invoke(cli, ["keys", "revoke", value.split(":")[0]])
            assert revoked.exit_code == 0, revoked.output
            assert "1 running falemu up refuses it now" in revoked.stdout
            assert httpx.post(url, json={}, headers=headers, timeout=10).status_code == 401  # no wait
        finally:
            state.unregister(path)


def test_the_first_runners_start_before_the_event_loop_and_the_queue_store(tmp_path: Path, settings: Settings) -> None:
    """Their containers start while the rest gets ready: `falemu up` waits for the runner, not for falemu."""
    seen: list[tuple[bool, bool]] = []

    class Recording(FakeRuntime):
        def start(self, spec: Any, events: Any = None) -> Any:
            seen.append((emu._thread is None, emu.queue_store is None))
            return super().start(spec, events) if events is not None else super().start(spec)

    runtime = Recording(start_delay=0.3)
    emu = Emulator(make_project(tmp_path, min_concurrency=1), settings, apps=["greeter"], runtime=runtime, warm=True)
    with emu:
        assert seen == [(True, True)]  # begun before the loop's thread and the queue store existed
        (runner,) = emu.runners("greeter")
        assert runner.state == "IDLE"
        assert httpx.post(emu.app_url("greeter") + "/echo", json={}, timeout=10).json()["runner"] == runner.id
    assert runtime.started == [runner.id]
    assert runtime.running() == []


def test_a_start_that_fails_after_the_runners_began_leaves_none(
    tmp_path: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = FakeRuntime(start_delay=0.3)
    emu = Emulator(make_project(tmp_path), settings, apps=["greeter"], runtime=runtime, warm=True)

    def locked() -> Any:
        raise UsageError("the queue is locked", hint="another falemu up runs in this project")

    monkeypatch.setattr(emu, "_open_queue", locked)
    with pytest.raises(UsageError, match="locked"):
        emu.start()
    deadline = time.monotonic() + 10
    while (not runtime.started or runtime.running()) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(runtime.started) == 1  # it had begun ...
    assert runtime.running() == []  # ... and was stopped once up


def test_an_app_serves_while_another_apps_first_runner_still_starts(tmp_path: Path, settings: Settings) -> None:
    """The gateway serves as soon as it is built: one slow app does not hold the other apps' URLs back."""

    class SlowOther(FakeRuntime):
        def start(self, spec: Any, events: Any = None) -> Any:
            if spec.prepared.app.alias == "other":
                time.sleep(3.0)
            return super().start(spec) if events is None else super().start(spec, events)

    runtime = SlowOther()
    emu = Emulator(make_project(tmp_path), settings, apps=["greeter", "other"], runtime=runtime, warm=True)
    starting = threading.Thread(target=emu.start)
    starting.start()
    try:
        deadline = time.monotonic() + 10
        while not any(isinstance(e, RunnerReady) and e.app == "greeter" for e in emu.events.history):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        answer = httpx.post(emu.app_url("greeter") + "/echo", json={}, timeout=10)
        assert answer.status_code == 200
        # answered while `other` was still starting
        assert not any(isinstance(e, RunnerReady) and e.app == "other" for e in emu.events.history)
    finally:
        starting.join(30)
        emu.stop()
    assert runtime.running() == []
