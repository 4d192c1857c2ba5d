"""Scaling on the real engine: a cold start after keep_alive expiry, and a scale-out to max_concurrency.

The app is ``tests/apps/slow`` (a FastAPI server with ``POST /slow?seconds=S``), under a unique deployed
name so only this run's containers are counted.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from falemu.config import get_app, load_project
from falemu.config.model import Project
from falemu.config.settings import Settings
from falemu.emulator import Emulator
from falemu.events import RunnerReady, RunnerStateChanged, RunnerStopped

pytestmark = pytest.mark.docker

SLOW = Path(__file__).resolve().parents[1] / "apps" / "slow"


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def emulator(docker_runtime: Any, rt_apps: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    home = tmp_path_factory.mktemp("scaling-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CONFIG_HOME", str(home / "config"))
        mp.setenv("XDG_CACHE_HOME", str(home / "cache"))
        loaded = load_project(SLOW)
        app = dataclasses.replace(get_app(loaded, "slowpoke"), alias=rt_apps.unique("slowpoke"))
        project = Project(root=loaded.root, pyproject=loaded.pyproject, apps={"slowpoke": app})
        settings = Settings(port=0, data_dir=home / "data")
        overrides = {"slowpoke": {"keep_alive": 2, "max_concurrency": 2, "termination_grace_period_seconds": 1}}
        emu = Emulator(project, settings, runtime=docker_runtime, overrides=overrides)
        with emu:
            yield emu


def live_runner_peak(emu: Emulator, alias: str) -> int:
    """The most runners of ``alias`` alive at once, replayed from the state events."""
    live: set[str] = set()
    peak = 0
    for event in emu.events.history:
        if isinstance(event, RunnerStateChanged) and event.app == alias:
            if event.state in ("TERMINATED", "FAILURE_DELAY"):
                live.discard(event.runner)
            else:
                live.add(event.runner)
            peak = max(peak, len(live))
    return peak


def test_cold_start_after_keep_alive_expiry(emulator: Emulator, docker_client: Any, rt_apps: Any) -> None:
    alias = emulator.configs["slowpoke"].alias
    url = emulator.app_url("slowpoke")
    first = httpx.post(f"{url}/slow?seconds=0", timeout=120)
    assert first.status_code == 200, first.text
    first_runner = first.json()["runner"]

    wait_until(lambda: not emulator.runners("slowpoke"), 60, "the idle runner to stop after keep_alive=2")
    stops = [e for e in emulator.events.history if isinstance(e, RunnerStopped) and e.runner == first_runner]
    assert [e.reason for e in stops] == ["keep_alive"]
    assert docker_client.containers.list(all=True, filters={"label": f"falemu.runner={first_runner}"}) == []

    second = httpx.post(f"{url}/slow?seconds=0", timeout=120)
    assert second.status_code == 200, second.text
    second_runner = second.json()["runner"]
    assert second_runner != first_runner
    ready = {e.runner: e.cold_start for e in emulator.events.history if isinstance(e, RunnerReady) and e.app == alias}
    assert ready[first_runner] is True
    assert ready[second_runner] is True


def test_scale_out_reaches_max_concurrency_and_no_more(emulator: Emulator, docker_client: Any) -> None:
    alias = emulator.configs["slowpoke"].alias
    url = emulator.app_url("slowpoke")

    def call(_: int) -> httpx.Response:
        return httpx.post(f"{url}/slow?seconds=2", timeout=180)

    with ThreadPoolExecutor(max_workers=6) as pool:
        responses = list(pool.map(call, range(6)))
    assert [r.status_code for r in responses] == [200] * 6
    served_by = {r.json()["runner"] for r in responses}
    assert len(served_by) == 2  # scaled out to max_concurrency=2 ...
    assert live_runner_peak(emulator, alias) == 2  # ... and never past it
    assert emulator.controller("slowpoke").stats.peak_runners == 2
    assert len(docker_client.containers.list(all=True, filters={"label": f"falemu.app={alias}"})) <= 2
