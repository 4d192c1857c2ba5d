"""Fault injection on the real engine (tests/apps/slow, min_concurrency 1, under a unique name).

* a runner killed in the middle of a request: the queued request completes exactly once on a new
  runner (the app records each execution in /data), the sync caller gets fal's 503
  ``runner_disconnected``;
* a 503 storm: the real ``fal_client.subscribe`` still completes (fal's queue retries), while
  ``fal_client.run`` gets the 503 with its error type;
* failed starts: FAILURE_DELAY in `falemu ps` and the events, lifted when the fault is cleared;
* /data read-only and full for a runner: the app's writes fail, and work again once the fault ends;
* after each test no fault is in effect and no runner is left with a broken /data.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from falemu.clock import WarpClock
from falemu.config import get_app, load_project
from falemu.config.model import Project
from falemu.config.settings import Settings
from falemu.emulator import Emulator
from falemu.events import FaultApplied, RunnerFailed
from falemu.testing import AppHandle, fal_client_routed_to, wait_until

pytestmark = pytest.mark.docker

SLOW = Path(__file__).resolve().parents[1] / "apps" / "slow"


@dataclasses.dataclass
class Rig:
    emu: Emulator
    app: AppHandle
    data: Path
    docker: Any
    run_dir: Path

    def live(self) -> list[Any]:
        return [r for r in self.emu.runners() if r.state in ("IDLE", "RUNNING")]

    def wait_live(self, count: int = 1) -> None:
        wait_until(lambda: len(self.live()) >= count, timeout=60, what=f"{count} live runner(s)")

    def mounts(self) -> list[tuple[str, bool]]:
        """(container, /data writable) of every running container of the app."""
        found = []
        for container in self.docker.containers.list(filters={"label": f"falemu.app={self.app.alias}"}):
            for mount in container.attrs["Mounts"]:
                if mount["Destination"] == "/data":
                    found.append((container.name, bool(mount["RW"])))
            if container.attrs["HostConfig"].get("Tmpfs"):
                found.append((container.name, False))
        return found


@pytest.fixture(scope="module")
def rig(
    docker_runtime: Any, rt_apps: Any, docker_client: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Rig]:
    home = tmp_path_factory.mktemp("chaos-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CONFIG_HOME", str(home / "config"))
        mp.setenv("XDG_CACHE_HOME", str(home / "cache"))
        mp.setenv("XDG_RUNTIME_DIR", str(home / "run"))
        loaded = load_project(SLOW)
        app = dataclasses.replace(get_app(loaded, "slowpoke"), alias=rt_apps.unique("chaos"))
        project = Project(root=loaded.root, pyproject=loaded.pyproject, apps={"slowpoke": app})
        settings = Settings(port=0, data_dir=home / "data")
        overrides = {"slowpoke": {"min_concurrency": 1, "keep_alive": 300, "termination_grace_period_seconds": 1}}
        emu = Emulator(project, settings, runtime=docker_runtime, overrides=overrides, clock=WarpClock())
        with emu:
            handle = AppHandle(emu, "slowpoke")
            yield Rig(emu, handle, home / "data", docker_client, home / "run")
            handle.close()


@pytest.fixture
def chaos(rig: Rig) -> Iterator[Rig]:
    rig.wait_live()
    yield rig
    rig.app.end_faults()
    # Nothing is left behind: no fault in effect, no hook on, no runner with a broken /data.
    emu = rig.emu
    assert rig.app.faults.active() == []
    assert emu.gateway is not None
    assert emu.gateway.faults is None
    assert emu.controller("slowpoke").faults is None
    assert emu.controller("slowpoke").backoff() is None
    rig.wait_live()
    wait_until(lambda: all(rw for _, rw in rig.mounts()), timeout=60, what="every runner's /data writable")


def test_a_runner_killed_mid_request(chaos: Rig) -> None:
    app = chaos.app
    # Sync: the caller gets fal's 503 with its error type.
    kill = app.faults.kill(after=0.5)
    began = time.monotonic()
    response = app.request("POST", "/slow", params={"seconds": 5})
    assert time.monotonic() - began < 4.5
    assert response.status_code == 503
    assert response.json()["error_type"] == "runner_disconnected"
    assert response.headers["x-fal-error-type"] == "runner_disconnected"
    assert kill.ended
    (victim,) = kill.targets
    # Queue: the request whose runner died is retried on a new runner and runs exactly once to the end.
    chaos.wait_live()
    kill = app.faults.kill(after=0.5)
    handle = app.submit("/record", None, params={"run": "killed", "seconds": 2})
    result = handle.result(timeout=120)
    (second_victim,) = kill.targets
    assert result["request_id"] == handle.request_id
    assert result["runner"] not in (victim, second_victim)
    lines = [(log.stem, line) for log in (chaos.data / "killed").glob("*.log") for line in log.read_text().splitlines()]
    assert lines == [(result["runner"], handle.request_id)]
    failed = [e for e in chaos.emu.events.history if isinstance(e, RunnerFailed) and e.runner == second_victim]
    assert failed
    assert "killed by fault" in failed[0].message


def test_a_503_storm_and_the_real_fal_client(chaos: Rig) -> None:
    import fal_client

    app = chaos.app
    app_id = f"{chaos.emu.settings.owner}/{app.alias}"
    with fal_client_routed_to(chaos.emu):
        storm = app.faults.error(503, count=3)
        result = fal_client.subscribe(app_id, arguments={}, path="slow", client_timeout=120)
        assert result["slept"] == 1.0
        assert storm.ended
        hits = [e.target for e in chaos.emu.events.history if isinstance(e, FaultApplied) and e.fault == storm.id]
        assert len(hits) == 3
        assert len(set(hits)) == 1  # three attempts of the one queued request, retried by fal's rules
        app.faults.error(503, count=1)
        with pytest.raises(fal_client.client.FalClientHTTPError) as caught:
            fal_client.run(app_id, arguments={}, path="slow")  # direct calls are not retried
        assert caught.value.status_code == 503
        assert caught.value.error_type == "runner_scheduling_failure"


def test_failed_starts_show_fals_back_off(chaos: Rig) -> None:
    app, emu = chaos.app, chaos.emu
    clock = emu.clock
    assert isinstance(clock, WarpClock)
    fails = app.faults.fail_starts(2)
    (runner,) = chaos.live()
    app.faults.kill(runner.id)  # min_concurrency 1: its replacement's start fails
    wait_until(lambda: (emu.controller("slowpoke").backoff() or {}).get("failures") == 1, timeout=60, what="one")
    clock.advance(31)
    wait_until(lambda: (emu.controller("slowpoke").backoff() or {}).get("failures") == 2, timeout=60, what="two")
    assert fails.ended
    env = {**os.environ, "XDG_RUNTIME_DIR": str(chaos.run_dir), "NO_COLOR": "1"}
    from falemu import state

    path = state.register(emu)
    try:
        ps = subprocess.run(
            [sys.executable, "-m", "falemu", "ps"], env=env, capture_output=True, text=True, timeout=60, check=True
        ).stdout
    finally:
        state.unregister(path)
    assert "slowpoke: FAILURE_DELAY after 2 failed start(s), next start in" in ps
    assert "failed during setup(): RuntimeError raised by fault" in ps
    failed = [e for e in emu.events.history if isinstance(e, RunnerFailed) and "setup()" in e.message]
    assert len(failed) == 2
    assert {e.error_type for e in failed} == {"runner_scheduling_failure"}


@pytest.mark.parametrize(("mode", "error"), [("read-only", "Read-only file system"), ("full", "No space left")])
def test_data_read_only_or_full_for_a_runner(chaos: Rig, mode: str, error: str) -> None:
    app = chaos.app
    assert app.request("POST", "/record", params={"run": "data"}).status_code == 200
    fault = app.faults.data(mode, seconds=60)
    wait_until(lambda: len(fault.targets) == 1, timeout=60, what="a runner with the broken /data")
    (broken,) = fault.targets
    wait_until(lambda: [r.id for r in chaos.live()] == [broken], timeout=60, what="only that runner serving")
    assert (broken, True) not in chaos.mounts()
    response = app.request("POST", "/record", params={"run": "data"})
    assert response.status_code == 500
    wait_until(lambda: error in app.logs(broken), timeout=10, what=f"{error!r} in the runner's log")
    fault.clear()
    wait_until(lambda: broken not in [r.id for r in chaos.emu.runners()], timeout=60, what="the runner replaced")
    chaos.wait_live()
    assert app.request("POST", "/record", params={"run": "data"}).status_code == 200
