"""``falemu up app.py::Class`` as a user runs it (the `fal run` argument form), stopped with Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
APPS = ROOT / "tests" / "apps" / "falapp"

pytestmark = pytest.mark.docker


@pytest.mark.timeout(600)
def test_up_of_a_ref_serves_the_app_and_ctrl_c_runs_teardown(
    tmp_path: Path, base_image: str, docker_client: Any
) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir(mode=0o700)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "pytest_plugin")]),
        "FALEMU_PYTHON_IMAGE": base_image,  # the App has no image: it runs on this Python image
        "FALEMU_CONFIG_DIR": str(tmp_path / "config"),
        "FALEMU_DATA_DIR": str(tmp_path / "data"),
        "XDG_RUNTIME_DIR": str(run_dir),
        "NO_COLOR": "1",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "falemu", "up", "apps.py::Lifecycle", "--port", "0", "--runtime", "docker"],
        cwd=APPS,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    seen: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            seen.append(line.rstrip("\n"))
            if line.startswith("press Ctrl-C to stop"):
                break
        text = "\n".join(seen)
        assert "── lifecycle (apps.py::Lifecycle) (auth: private)" in seen, text
        assert "  App id local/lifecycle" in seen, text
        assert any(line.strip().endswith("/local/lifecycle/echo") for line in seen), text  # the App's OpenAPI paths
        sync = next(line.split()[1] for line in seen if line.startswith("  Sync   "))
        exports = subprocess.run(
            [sys.executable, "-m", "falemu", "env", "--port", sync.split(":")[2].split("/")[0]],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        key = next(line.split("=", 1)[1].strip("'") for line in exports.splitlines() if "FAL_KEY=" in line)
        answer = httpx.post(f"{sync}/echo", json={"text": "up"}, headers={"Authorization": f"Key {key}"}, timeout=60)
        assert answer.status_code == 200, answer.text
        assert answer.json()["text"] == "up"
        assert answer.json()["answered_at"] > answer.json()["setup_finished_at"]
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = text + "\n" + rest
    assert proc.returncode == 0, output[-3000:]
    lines = output.splitlines()
    assert any(line.endswith("falemu-test: setup finished") for line in lines)
    assert any(line.endswith("falemu-test: teardown ran") for line in lines), output[-3000:]
    assert "stopped: every runner of this falemu up is gone" in output
    assert docker_client.containers.list(all=True, filters={"label": "falemu.app=lifecycle"}) == []
