"""`falemu up --watch` on the real engine: code changes saved to disk while a load generator calls the
app, rolled out by the app's deployment_strategy.

Rolling: five code changes (one of them does not build, one does not start) under steady load: not one
request fails, and every request sent after a rollout finished is answered by the new code. Recreate:
one change under load: the old runner stops before the new one starts, requests wait in the gap (none
fails), and only requests sent in that gap wait long.

The app is ``tests/apps/reloading`` (``POST /version`` answers its ``VERSION``), copied to a temporary
folder under a unique deployed name.
"""

from __future__ import annotations

import asyncio
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from falemu.config import load_project
from falemu.config.settings import Settings
from falemu.devloop.loop import DevLoop
from falemu.emulator import Emulator
from falemu.events import Event, ReloadStarted, RolloutFailed, RolloutFinished, RunnerReady, RunnerStopped

pytestmark = pytest.mark.docker

APP = Path(__file__).resolve().parents[1] / "apps" / "reloading"


@dataclass
class Call:
    sent: float  # wall-clock time
    done: float
    status: int = 0
    version: int = 0
    error: str = ""


class Load:
    """A bounded load generator: ``rate`` POST requests a second from one thread, each on its own."""

    def __init__(self, url: str, rate: float) -> None:
        self.url = url
        self.rate = rate
        self.calls: list[Call] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), name="load", daemon=True)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(120)

    async def _one(self, client: httpx.AsyncClient) -> None:
        call = Call(sent=time.time(), done=0.0)
        try:
            response = await client.post(self.url, json={})
            call.status = response.status_code
            if response.status_code == 200:
                call.version = int(response.json()["version"])
            else:
                call.error = response.text[:200]
        except httpx.HTTPError as exc:
            call.error = f"{type(exc).__name__}: {exc}"
        call.done = time.time()
        self.calls.append(call)

    async def _run(self) -> None:
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=50)
        async with httpx.AsyncClient(timeout=120.0, limits=limits) as client:
            tasks: set[asyncio.Task[None]] = set()
            period = 1.0 / self.rate
            next_at = time.monotonic()
            while not self._stop.is_set():
                task = asyncio.ensure_future(self._one(client))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                next_at += period
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            if tasks:
                await asyncio.gather(*tasks)

    def failures(self) -> list[Call]:
        return [c for c in self.calls if c.status != 200]


def copy_app(dest: Path, name: str, strategy: str) -> Path:
    shutil.copytree(APP, dest)
    pyproject = dest / "pyproject.toml"
    text = pyproject.read_text().replace(
        "[tool.fal.apps.reloading]\n",
        f'[tool.fal.apps.reloading]\nname = "{name}"\ndeployment_strategy = "{strategy}"\n',
    )
    pyproject.write_text(text)
    return dest


def set_version(root: Path, text: str) -> None:
    server = root / "server.py"
    source = server.read_text()
    start = source.index("VERSION = ")
    end = source.index("\n", start)
    server.write_text(source[:start] + text + source[end:])


def outcome(emu: Emulator, revision: int) -> Event | None:
    for event in emu.events.history:
        if isinstance(event, RolloutFinished | RolloutFailed) and event.revision == revision:
            return event
    return None


def wait_outcome(emu: Emulator, revision: int, timeout: float = 120.0) -> Event:
    deadline = time.monotonic() + timeout
    while (found := outcome(emu, revision)) is None:
        if time.monotonic() > deadline:
            pytest.fail(f"revision r{revision} neither served nor failed within {timeout:g} s")
        time.sleep(0.05)
    return found


@pytest.fixture
def watched(
    request: pytest.FixtureRequest, docker_runtime: Any, rt_apps: Any, tmp_path: Path
) -> Iterator[tuple[Emulator, Path, DevLoop]]:
    strategy = request.param
    root = copy_app(tmp_path / "app", rt_apps.unique(f"reload-{strategy}"), strategy)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
        mp.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
        emu = Emulator(load_project(root), Settings(port=0, data_dir=tmp_path / "data"), runtime=docker_runtime)
        with emu:
            loop = DevLoop(emu, step_ms=50).start()
            try:
                yield emu, root, loop
            finally:
                loop.stop()


@pytest.mark.parametrize("watched", ["rolling"], indirect=True)
def test_rolling_reloads_under_load_lose_no_request(watched: tuple[Emulator, Path, DevLoop]) -> None:
    emu, root, _ = watched
    dockerfile = (root / "Dockerfile").read_text()
    url = emu.app_url("reloading") + "/version"
    with Load(url, rate=40) as load:
        time.sleep(1.0)
        set_version(root, "VERSION = 2")
        assert isinstance(wait_outcome(emu, 2), RolloutFinished)
        set_version(root, "VERSION = 3")
        assert isinstance(wait_outcome(emu, 3), RolloutFinished)
        # A change that does not build: r3 keeps serving.
        (root / "Dockerfile").write_text(dockerfile + "RUN exit 3\n")
        failed = wait_outcome(emu, 4)
        assert isinstance(failed, RolloutFailed)
        assert failed.stage == "build"
        assert failed.serving == 3
        # One that builds but whose server does not start: r3 keeps serving, the error shows its logs.
        (root / "Dockerfile").write_text(dockerfile)
        set_version(root, "VERSION = = 5")
        failed = wait_outcome(emu, 5)
        assert isinstance(failed, RolloutFailed)
        assert failed.stage == "start"
        assert failed.serving == 3
        assert "SyntaxError" in failed.logs
        set_version(root, "VERSION = 6")
        assert isinstance(wait_outcome(emu, 6), RolloutFinished)
        set_version(root, "VERSION = 7")
        assert isinstance(wait_outcome(emu, 7), RolloutFinished)
        time.sleep(1.0)
    calls = load.calls
    assert len(calls) > 200
    assert load.failures() == [], load.failures()[:5]
    # Each rollout: from its finish on, every request is answered by the new code.
    for event in emu.events.history:
        if isinstance(event, RolloutFinished):
            later = [c.version for c in calls if c.sent > event.ts + 0.05]
            assert later
            assert min(later) >= event.revision, (event.revision, sorted(set(later)))
    assert {c.version for c in calls} == {1, 2, 3, 6, 7}
    assert emu.controller("reloading").revision == 7
    assert {r.revision for r in emu.runners("reloading") if r.state in ("IDLE", "RUNNING")} == {7}


@pytest.mark.parametrize("watched", ["recreate"], indirect=True)
def test_recreate_stops_the_old_runner_first_and_requests_wait_in_the_gap(
    watched: tuple[Emulator, Path, DevLoop],
) -> None:
    emu, root, _ = watched
    url = emu.app_url("reloading") + "/version"
    with Load(url, rate=20) as load:
        time.sleep(1.5)
        set_version(root, "VERSION = 2")
        finished = wait_outcome(emu, 2)
        time.sleep(1.5)
    assert isinstance(finished, RolloutFinished)
    assert finished.strategy == "recreate"
    assert load.failures() == [], load.failures()[:5]
    # The old runner was gone before the new one was ready.
    stopped = [e for e in emu.events.history if isinstance(e, RunnerStopped) and e.reason == "rollout"]
    ready = [e for e in emu.events.history if isinstance(e, RunnerReady) and e.revision == 2]
    assert stopped
    assert ready
    assert stopped[-1].ts <= ready[0].ts
    # The gap: requests sent in it waited for the new runner; requests outside it did not wait long.
    assert finished.unavailable > 0.2
    gap_start, gap_end = finished.ts - finished.unavailable, finished.ts
    waited = [c for c in load.calls if c.done - c.sent > 0.75 * finished.unavailable]
    assert waited
    for call in waited:
        assert gap_start - 1.0 <= call.sent <= gap_end, (call, gap_start, gap_end)
    assert {c.version for c in load.calls if c.sent > gap_end + 0.05} == {2}


FALAPP = Path(__file__).resolve().parents[1] / "apps" / "falapp"


def test_a_fal_app_module_change_reloads_it(docker_runtime: Any, rt_apps: Any, tmp_path: Path, base_image: str) -> None:
    alias = rt_apps.unique("reload-falapp")
    root = tmp_path / "falapp"
    shutil.copytree(FALAPP, root)
    pyproject = root / "pyproject.toml"
    pyproject.write_text(
        pyproject.read_text().replace("[tool.fal.apps.lifecycle]\n", f'[tool.fal.apps.lifecycle]\nname = "{alias}"\n')
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
        mp.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
        mp.setenv("FALEMU_PYTHON_IMAGE", base_image)
        settings = Settings(port=0, data_dir=tmp_path / "data")
        with Emulator(load_project(root), settings, apps=["lifecycle"], runtime=docker_runtime, warm=True) as emu:
            loop = DevLoop(emu, step_ms=50).start()
            try:
                url = emu.app_url("lifecycle") + "/echo"
                assert httpx.post(url, json={"text": "quiet"}, timeout=120).json()["text"] == "quiet"
                (root / "notes.md").write_text("not part of a fal.App's image\n")
                module = root / "apps.py"
                module.write_text(module.read_text().replace("text=payload.text,", "text=payload.text.upper(),"))
                finished = wait_outcome(emu, 2, timeout=240)
                assert isinstance(finished, RolloutFinished)
                assert httpx.post(url, json={"text": "loud"}, timeout=120).json()["text"] == "LOUD"
                started = [e for e in emu.events.history if isinstance(e, ReloadStarted)]
                assert started[0].changes == ["apps.py"]
            finally:
                loop.stop()
