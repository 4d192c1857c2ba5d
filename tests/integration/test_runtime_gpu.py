"""GPU passthrough: ids granted on an engine that has the NVIDIA driver, CPU fallback on one that has not.

The GPU engine is a second dockerd started by the ``gpu_engine`` fixture with a fake
``nvidia-container-runtime-hook``; it is reached over TCP at its bridge address, which also proves that
runners are reached at the engine's address and not at an assumed 127.0.0.1.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from up_process import user_env

from falemu.errors import GpuUnavailable
from falemu.events import EventBus, Notice
from falemu.runtime.base import RunnerSpec
from falemu.runtime.docker import ContainerHandle, DockerRuntime

pytestmark = pytest.mark.docker


def _visible_devices(runtime: DockerRuntime, runner: Any) -> str:
    handle = runner.handle
    assert isinstance(handle, ContainerHandle)
    # The NVIDIA driver sets the variable on the container's process, not in its config: read PID 1's.
    result = runtime.client.containers.get(handle.id).exec_run(["cat", "/proc/1/environ"])
    env = dict(item.split("=", 1) for item in result.output.decode().split("\0") if "=" in item)
    return env.get("NVIDIA_VISIBLE_DEVICES", "")


@pytest.fixture(scope="module")
def gpu_runtime(gpu_engine: Any, build_base_override: str) -> Iterator[DockerRuntime]:
    """A runtime that finds the GPU engine the way users point Docker elsewhere: DOCKER_HOST and TLS."""
    saved = {key: os.environ.get(key) for key in gpu_engine.env}
    os.environ.update(gpu_engine.env)
    try:
        runtime = DockerRuntime(gpu_count=2, reap=False)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    yield runtime
    runtime.close()


def test_each_runner_gets_its_own_gpu_on_a_gpu_engine(
    gpu_runtime: DockerRuntime, gpu_engine: Any, rt_apps: Any, tmp_path: Path
):
    prepared = gpu_runtime.prepare(rt_apps.example())  # machine_type GPU-H100
    assert prepared.app.wants_gpu
    events = EventBus()
    spec = RunnerSpec(prepared, "g1", "local", tmp_path, gpu="require")
    first = gpu_runtime.start(spec, events)
    second = gpu_runtime.start(dataclasses.replace(spec, runner_id="g2"), events)
    try:
        assert first.gpu_ids == ("0",)
        assert second.gpu_ids == ("1",)
        assert _visible_devices(gpu_runtime, first) == "0"
        assert _visible_devices(gpu_runtime, second) == "1"
        # Reached at the engine's address (its bridge IP over TCP), not at 127.0.0.1.
        assert first.host == gpu_engine.address
        assert httpx.get(f"{first.url}/health", timeout=10).json() == {"ok": True}

        # Both GPUs are held: --gpu require refuses a third runner, auto shares with a warning.
        with pytest.raises(GpuUnavailable, match="held by another runner"):
            gpu_runtime.start(dataclasses.replace(spec, runner_id="g3"), events)
        third = gpu_runtime.start(dataclasses.replace(spec, runner_id="g3", gpu="auto"), events)
        assert third.gpu_ids == ("0",)
        assert any(isinstance(e, Notice) and "shares GPU 0" in e.message for e in events.history)
        gpu_runtime.stop(third, grace=1)
    finally:
        gpu_runtime.stop(first, grace=1)
    # A freed GPU goes to the next runner.
    fourth = gpu_runtime.start(dataclasses.replace(spec, runner_id="g4"), events)
    try:
        assert fourth.gpu_ids == ("0",)
    finally:
        gpu_runtime.stop(fourth, grace=1)
        gpu_runtime.stop(second, grace=1)

    two = dataclasses.replace(prepared, app=dataclasses.replace(prepared.app, num_gpus=2))
    both = gpu_runtime.start(RunnerSpec(two, "g5", "local", tmp_path, gpu="require"))
    try:
        assert both.gpu_ids == ("0", "1")
        assert _visible_devices(gpu_runtime, both) == "0,1"
    finally:
        gpu_runtime.stop(both, grace=1)
    assert rt_apps.containers(gpu_runtime.client, prepared.app.alias) == []


def test_cpu_fallback_on_an_engine_without_gpus(
    prepared_example: Any, rt_apps: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # nothing remembered about the engine yet
    runtime = DockerRuntime(reap=False)  # the main engine (local, no NVIDIA driver on this host): no NVIDIA runtime
    events = EventBus()
    alias = rt_apps.unique("gpu-fallback")
    prepared = dataclasses.replace(prepared_example, app=dataclasses.replace(prepared_example.app, alias=alias))
    since = int(time.time()) - 1
    try:
        spec = RunnerSpec(prepared, "c1", "local", tmp_path, gpu="auto")
        runners = [runtime.start(spec, events), runtime.start(dataclasses.replace(spec, runner_id="c2"), events)]
        for runner in runners:
            assert runner.gpu_ids == ()
            assert httpx.get(f"{runner.url}/health", timeout=10).status_code == 200
        # The engine was asked once, by a probe container; each runner's container was created once, on CPU.
        created = [
            e["Actor"]["Attributes"]["name"]
            for e in runtime.client.api.events(
                since=since,
                until=int(time.time()) + 1,
                filters={"type": "container", "event": "create", "label": f"falemu.app={alias}"},
                decode=True,
            )
        ]
        names = [r.handle.name for r in runners if isinstance(r.handle, ContainerHandle)]
        assert sorted(created) == sorted([*names, *[n for n in created if "gpu-probe" in n]]), created
        assert len([n for n in created if "gpu-probe" in n]) == 1, created
        warnings = [e for e in events.history if isinstance(e, Notice) and e.level == "warning"]
        assert len(warnings) == 1, warnings  # one clear warning, not one per runner
        assert 'could not select device driver "" with capabilities: [[gpu]]' in warnings[0].message
        assert "start on CPU" in warnings[0].message
        with pytest.raises(GpuUnavailable, match="cannot give GPUs"):
            runtime.start(dataclasses.replace(spec, runner_id="c3", gpu="require"), events)
    finally:
        runtime.close()
    assert rt_apps.containers(runtime.client, alias) == []  # the probe container too

    # The next runtime (the next `falemu up`) remembers the engine's answer: it asks no more, and says the same.
    fresh = DockerRuntime(reap=False)
    quiet = EventBus()
    since = int(time.time()) - 1
    try:
        off = fresh.start(RunnerSpec(prepared, "c4", "local", tmp_path, gpu="off"), quiet)
        handle = off.handle
        assert isinstance(handle, ContainerHandle)
        assert not fresh.client.api.inspect_container(handle.id)["HostConfig"].get("DeviceRequests")
        assert not [e for e in quiet.history if isinstance(e, Notice)]
        auto = fresh.start(RunnerSpec(prepared, "c5", "local", tmp_path, gpu="auto"), quiet)
        assert auto.gpu_ids == ()
        assert [e.message for e in quiet.history if isinstance(e, Notice)] == [warnings[0].message]
        with pytest.raises(GpuUnavailable, match="cannot give GPUs"):
            fresh.start(RunnerSpec(prepared, "c6", "local", tmp_path, gpu="require"))
        probes = [
            e["Actor"]["Attributes"]["name"]
            for e in fresh.client.api.events(
                since=since,
                until=int(time.time()) + 1,
                filters={"type": "container", "event": "create", "label": f"falemu.app={alias}"},
                decode=True,
            )
            if "gpu-probe" in e["Actor"]["Attributes"]["name"]
        ]
        assert probes == []
    finally:
        fresh.close()
    assert rt_apps.containers(fresh.client, alias) == []


def test_an_unchanged_falemu_up_begins_its_gpu_runner_early_with_the_same_gpu(
    gpu_engine: Any, base_image: str, tmp_path: Path
) -> None:
    """The early launch on a GPU engine (falemu.prelaunch): the second `falemu up` adopts a runner begun
    with the GPU request the first one made, and the runner has that GPU."""
    import json
    import shutil
    import signal
    import subprocess
    import sys

    import docker

    project = tmp_path / "direct-server"
    shutil.copytree(Path(__file__).resolve().parents[2] / "examples" / "direct-server", project)
    (project / ".git").mkdir()
    env = user_env(tmp_path, base_image, DOCKER_HOST=gpu_engine.unix_url, FALEMU_GPU_COUNT="2")
    client = docker.DockerClient(base_url=gpu_engine.unix_url)
    ready: list[dict[str, Any]] = []
    try:
        for _ in range(2):
            proc = subprocess.Popen(
                [sys.executable, "-m", "falemu", "up", "--port", "0", "--gpu", "require", "--json"],
                cwd=project,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            try:
                assert proc.stdout is not None
                seen = []
                for line in proc.stdout:
                    seen.append(line)
                    if '"event": "RunnerReady"' in line:
                        ready.append(json.loads(line))
                    if '"event": "Ready"' in line:
                        break
                else:
                    pytest.fail("falemu up ended before Ready:\n" + "".join(seen[-30:]))
                (container,) = client.containers.list(filters={"label": f"falemu.runner={ready[-1]['runner']}"})
                requests = container.attrs["HostConfig"]["DeviceRequests"]
                assert [r["DeviceIDs"] for r in requests] == [["0"]]
            finally:
                proc.send_signal(signal.SIGINT)
                assert proc.wait(timeout=120) == 0
        assert [r["early"] for r in ready] == [False, True]
    finally:
        for container in client.containers.list(all=True, filters={"label": "falemu.app=greeter"}):
            container.remove(force=True)
        client.close()
