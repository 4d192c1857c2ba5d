"""``falemu up --watch`` as a user runs it: save a change, see the new revision roll out in the live view
and in ``falemu ps``, then Ctrl-C leaves nothing behind."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

APP = Path(__file__).resolve().parents[1] / "apps" / "reloading"

pytestmark = pytest.mark.docker


@pytest.mark.timeout(240)
def test_up_watch_rolls_out_a_saved_change(tmp_path: Path, base_image: str, docker_client: Any) -> None:
    alias = f"watch-{uuid.uuid4().hex[:6]}"
    project = tmp_path / "app"
    shutil.copytree(APP, project)
    pyproject = project / "pyproject.toml"
    pyproject.write_text(
        pyproject.read_text().replace("[tool.fal.apps.reloading]\n", f'[tool.fal.apps.reloading]\nname = "{alias}"\n')
    )
    run_dir = tmp_path / "run"
    run_dir.mkdir(mode=0o700)
    env = {
        **os.environ,
        "FALEMU_BUILD_ARG_BASE_IMAGE": base_image,
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "XDG_RUNTIME_DIR": str(run_dir),
        "NO_COLOR": "1",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "falemu", "up", "--watch", "--port", "0"],
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        seen: list[str] = []

        def read_until(marker: str) -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                seen.append(line.rstrip("\n"))
                if marker in line:
                    return
            pytest.fail(f"no {marker!r} in the output:\n" + "\n".join(seen))

        read_until("press Ctrl-C to stop")
        assert any(
            line.startswith(f"watching {project}") and "deployment_strategy: reloading rolling" in line for line in seen
        ), seen
        sync = next(line.split()[1] for line in seen if line.startswith("  Sync   "))
        assert httpx.post(f"{sync}/version", timeout=30).json()["version"] == 1
        server = project / "server.py"
        server.write_text(server.read_text().replace("VERSION = 1", "VERSION = 2"))
        read_until(f"{alias}: r2 serves (rolling")
        assert f"{alias}: server.py changed: making revision r2" in seen
        assert any(line.startswith("[") and "ready (r2) at" in line for line in seen), seen
        assert httpx.post(f"{sync}/version", timeout=30).json()["version"] == 2
        ps = subprocess.run(
            [sys.executable, "-m", "falemu", "ps"], env=env, capture_output=True, text=True, timeout=60, check=True
        ).stdout
        assert "reloading: serving revision r2" in ps
        rows = [line.split() for line in ps.splitlines() if line.startswith("reloading ")]
        assert any(row[2] == "r2" and row[3] in ("IDLE", "RUNNING") for row in rows), ps
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert list(docker_client.containers.list(all=True, filters={"label": f"falemu.app={alias}"})) == []
    from docker_support import remove_app_images

    remove_app_images(docker_client, alias)
