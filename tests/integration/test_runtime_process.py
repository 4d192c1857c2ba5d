"""ProcessRuntime: runners as host subprocesses with the runner environment, PORT and the data folder."""

from __future__ import annotations

import dataclasses
import os
import socket
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from falemu.config.model import AppConfig, AppShape, ScalingConfig
from falemu.errors import RunnerError, StartupTimeout
from falemu.events import EventBus, Notice, RunnerReady
from falemu.runtime.base import RunnerSpec
from falemu.runtime.process import ProcessRuntime, app_command

APPS = Path(__file__).resolve().parents[1] / "apps"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _app(**changes: Any) -> AppConfig:
    app = AppConfig(
        name="envapp",
        alias="envapp",
        shape=AppShape.DIRECT_SERVER,
        project_root=APPS / "process-env",
        exposed_port=_free_port(),
        secrets=("PROC_SECRET",),
        scaling=ScalingConfig(termination_grace_period_seconds=2, startup_timeout=20),
    )
    return dataclasses.replace(app, **changes)


def test_process_runner_serves_with_runner_env_and_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PROC_SECRET", "s3cret")
    runtime = ProcessRuntime()
    app = _app()
    prepared = runtime.prepare(app)
    assert prepared.image is None
    events = EventBus()
    spec = RunnerSpec(
        prepared, "p1", "me", tmp_path / "data", command=("python3", "server.py"), mounts={"/tmp/x": "/run/x"}
    )
    runner = runtime.start(spec, events)
    try:
        assert runner.port == app.exposed_port
        answer = httpx.get(f"{runner.url}/visit", timeout=10).json()
        assert answer["visits"] == 1
        assert answer["env"]["PORT"] == str(app.exposed_port)
        assert answer["env"]["FAL_APP_NAME"] == "me/envapp"
        assert answer["env"]["FAL_JOB_ID"] == "p1"
        assert answer["env"]["PROC_SECRET"] == "s3cret"
        assert answer["env"]["FAL_PERSISTENT_DIR"] == str((tmp_path / "data").resolve())
        assert answer["env"]["HF_HOME"].endswith("data/.cache/huggingface")
        assert answer["argv"][0] == "server.py"
        # One runner per fixed port.
        with pytest.raises(RunnerError, match="one runner per exposed_port"):
            runtime.start(dataclasses.replace(spec, runner_id="p2"))
        assert runtime.is_alive(runner)
        assert any("serving on" in line for line in runtime.logs(runner))
        assert [e.runner for e in events.history if isinstance(e, RunnerReady)] == ["p1"]
        # Mounts need a container: the process runtime says once that it does not make them.
        notes = [e.message for e in events.history if isinstance(e, Notice)]
        assert notes == ["the process runtime does not mount /tmp/x -> /run/x: runners see host paths as they are"]
    finally:
        runtime.stop(runner)
    assert not runtime.is_alive(runner)
    # The data folder outlives the runner.
    again = runtime.start(dataclasses.replace(spec, runner_id="p3"))
    try:
        assert httpx.get(f"{again.url}/visit", timeout=10).json()["visits"] == 2
    finally:
        runtime.close()
    assert not runtime.is_alive(again)


def test_process_runner_that_exits_is_reported_with_its_logs(tmp_path: Path):
    runtime = ProcessRuntime()
    app = _app()
    code = "import sys; print('cannot load weights', flush=True); sys.exit(4)"
    spec = RunnerSpec(runtime.prepare(app), "p1", "me", tmp_path, command=(sys.executable, "-c", code))
    with pytest.raises(RunnerError) as info:
        runtime.start(spec)
    assert info.value.container_exit_code == 4
    assert "cannot load weights" in info.value.logs


def test_process_runner_startup_timeout(tmp_path: Path):
    runtime = ProcessRuntime()
    app = _app(scaling=ScalingConfig(startup_timeout=1, termination_grace_period_seconds=1))
    spec = RunnerSpec(
        runtime.prepare(app), "p1", "me", tmp_path, command=(sys.executable, "-c", "import time; time.sleep(60)")
    )
    with pytest.raises(StartupTimeout) as info:
        runtime.start(spec)
    assert info.value.error_type == "startup_timeout"
    assert runtime.close() is None


def test_command_comes_from_cmd_override_pyproject_or_dockerfile():
    from falemu.config.model import ImageConfig

    example = Path(__file__).resolve().parents[2] / "examples" / "direct-server"
    app = _app(project_root=example, image=ImageConfig(dockerfile=example / "Dockerfile"))
    command = app_command(app)
    assert command[0] == sys.executable
    assert command[1:] == ["-m", "uvicorn", "server:app", "--host", "0.0.0.0", "--port", "8000"]
    with_cmd = dataclasses.replace(app, image=ImageConfig(dockerfile=example / "Dockerfile", cmd=("serve", "--fast")))
    assert app_command(with_cmd) == ["serve", "--fast"]
    assert app_command(app, ("./run.sh",)) == ["./run.sh"]
    with pytest.raises(RunnerError, match="no command"):
        app_command(_app())


def test_process_runners_get_their_own_gpus_by_cuda_visible_devices(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fake_gpus import install_fake_nvidia_smi

    from falemu.errors import GpuUnavailable

    install_fake_nvidia_smi(tmp_path / "bin", monkeypatch)
    runtime = ProcessRuntime()  # counts the host's GPUs with nvidia-smi -L: 2
    events = EventBus()
    started = []

    def start(name: str, gpu: str = "auto", **changes: Any) -> dict[str, Any]:
        app = _app(name=name, alias=name, secrets=(), **changes)
        spec = RunnerSpec(runtime.prepare(app), f"{name}-1", "me", tmp_path / "data", command=("python3", "server.py"))
        spec = dataclasses.replace(spec, gpu=gpu)  # type: ignore[arg-type]
        runner = runtime.start(spec, events)
        started.append(runner)
        env: dict[str, Any] = httpx.get(f"{runner.url}/", timeout=10).json()["env"]
        return env

    try:
        assert start("first", machine_types=("GPU-A100",))["CUDA_VISIBLE_DEVICES"] == "0"
        assert start("second", machine_types=("GPU-A100",))["CUDA_VISIBLE_DEVICES"] == "1"
        assert start("cpu", machine_types=("S",))["CUDA_VISIBLE_DEVICES"] == ""  # fal's CPU machines have none
        with pytest.raises(GpuUnavailable, match="held by another runner"):
            start("strict", gpu="require", machine_types=("GPU-A100",))
        shared = start("shared", machine_types=("GPU-H100",), num_gpus=2)
        assert shared["CUDA_VISIBLE_DEVICES"] == "0,1"
        assert any(isinstance(e, Notice) and "shares GPU 0,1" in e.message for e in events.history)
        assert started[0].gpu_ids == ("0",)
    finally:
        for runner in started:
            runtime.stop(runner, grace=0)
    runtime.close()
    # Stopped runners give their GPUs back.
    again = ProcessRuntime()
    app = _app(name="after", alias="after", secrets=(), machine_types=("GPU-A100",))
    runner = again.start(
        RunnerSpec(again.prepare(app), "after-1", "me", tmp_path / "data", command=("python3", "server.py")), events
    )
    try:
        assert httpx.get(f"{runner.url}/", timeout=10).json()["env"]["CUDA_VISIBLE_DEVICES"] == "0"
    finally:
        again.stop(runner, grace=0)


def test_a_gpu_app_on_a_host_without_gpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fake_gpus import install_fake_nvidia_smi

    from falemu.errors import GpuUnavailable

    install_fake_nvidia_smi(tmp_path / "bin", monkeypatch, names=())
    runtime = ProcessRuntime()
    app = _app(name="needs", alias="needs", secrets=(), machine_types=("GPU-A100",))
    spec = RunnerSpec(runtime.prepare(app), "n1", "me", tmp_path / "data", command=("python3", "server.py"))
    with pytest.raises(GpuUnavailable, match="this host has none"):
        runtime.start(dataclasses.replace(spec, gpu="require"), EventBus())
    events = EventBus()
    runner = runtime.start(spec, events)
    try:
        env = httpx.get(f"{runner.url}/", timeout=10).json()["env"]
        assert env.get("CUDA_VISIBLE_DEVICES") == os.environ.get("CUDA_VISIBLE_DEVICES")  # left as the host has it
        assert any(isinstance(e, Notice) and "its runners run on CPU" in e.message for e in events.history)
    finally:
        runtime.stop(runner, grace=0)
