"""`falemu doctor` on the real engine."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from click.testing import CliRunner

pytestmark = pytest.mark.docker


def test_doctor_reports_engine_gpu_data_and_port(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, base_image: str):
    from falemu.cli.doctor import doctor

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        free = sock.getsockname()[1]
    monkeypatch.setenv("FALEMU_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("FALEMU_PORT", str(free))
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(doctor, ["--image", base_image])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert any(line.startswith("ok") and "engine" in line and "Docker" in line for line in lines)
    assert any(line.startswith("warn") and "gpu" in line and "could not select device driver" in line for line in lines)
    assert any(line.startswith("ok") and "arch" in line for line in lines)
    assert any(line.startswith("ok") and str(tmp_path / "data") in line for line in lines)
    assert any(line.startswith("ok") and f"127.0.0.1:{free} is free" in line for line in lines)

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", free))
        busy.listen()
        failed = CliRunner().invoke(doctor, ["--image", base_image])
    assert failed.exit_code == 1
    assert any(line.startswith("FAIL") and f"127.0.0.1:{free} is in use" in line for line in failed.output.splitlines())


def test_doctor_lists_the_gpus_of_a_host_without_an_engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fake_gpus import NAMES, install_fake_nvidia_smi

    from falemu.cli.doctor import doctor

    install_fake_nvidia_smi(tmp_path / "bin", monkeypatch)
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    monkeypatch.setenv("FALEMU_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("FALEMU_PORT", "0")
    monkeypatch.delenv("FALEMU_RUNTIME", raising=False)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(doctor, [])
    assert result.exit_code == 0, result.output  # the process runtime serves here: not a failure
    lines = result.output.splitlines()
    engine = next(line for line in lines if line.startswith("warn") and " engine " in line)
    assert "runs apps as host processes (each runner on its own GPUs, by CUDA_VISIBLE_DEVICES)" in engine
    gpus = next(line for line in lines if " gpus " in line)
    assert gpus.startswith("ok")
    assert f"2 GPU(s): {NAMES[0]}; {NAMES[1]}" in gpus
    monkeypatch.setenv("FALEMU_RUNTIME", "docker")  # asked for Docker: now it is a failure
    strict = CliRunner().invoke(doctor, [])
    assert strict.exit_code == 1
    assert any(line.startswith("FAIL") and " engine " in line for line in strict.output.splitlines())


def test_doctor_says_when_the_engine_cannot_pass_the_hosts_gpus_through(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, base_image: str
) -> None:
    from fake_gpus import install_fake_nvidia_smi

    from falemu.cli.doctor import doctor

    install_fake_nvidia_smi(tmp_path / "bin", monkeypatch)
    monkeypatch.setenv("FALEMU_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("FALEMU_PORT", "0")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(doctor, ["--image", base_image])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    gpu = lines.index(next(line for line in lines if line.startswith("warn") and " gpu " in line))
    assert "cannot pass this host's 2 GPU(s) through to containers (no NVIDIA runtime" in lines[gpu]
    assert "nvidia-container-toolkit" in lines[gpu + 1]
    assert "--runtime process" in lines[gpu + 1]
