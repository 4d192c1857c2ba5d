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
