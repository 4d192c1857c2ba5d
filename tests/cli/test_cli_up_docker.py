"""``falemu up`` as a user runs it: a subprocess on the real Docker engine, stopped with Ctrl-C (SIGINT)."""

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

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "direct-server"
APPS = ROOT / "tests" / "apps"

pytestmark = pytest.mark.docker


def _env(tmp_path: Path, base_image: str) -> dict[str, str]:
    run_dir = tmp_path / "run"
    run_dir.mkdir(mode=0o700, exist_ok=True)
    return {
        **os.environ,
        "FALEMU_BUILD_ARG_BASE_IMAGE": base_image,
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "XDG_RUNTIME_DIR": str(run_dir),
        "NO_COLOR": "1",
    }


def _project(tmp_path: Path, source: Path, alias: str, startup_timeout: int = 60) -> Path:
    """A copy of ``source`` (a folder with a Dockerfile) declared as one app named ``alias``."""
    folder = tmp_path / alias
    shutil.copytree(source, folder, ignore=shutil.ignore_patterns("pyproject.toml"))
    (folder / "pyproject.toml").write_text(
        f'[tool.fal.apps.{alias}]\nexposed_port = 8000\nauth = "public"\nkeep_alive = 300\n'
        f'startup_timeout = {startup_timeout}\nmachine_type = "XS"\n\n'
        f'[tool.fal.apps.{alias}.image]\ndockerfile = "Dockerfile"\n'
    )
    return folder


def _containers(docker_client: Any, alias: str) -> list[Any]:
    return list(docker_client.containers.list(all=True, filters={"label": f"falemu.app={alias}"}))


@pytest.mark.timeout(180)
def test_up_serves_prints_its_urls_and_leaves_nothing_after_ctrl_c(
    tmp_path: Path, base_image: str, docker_client: Any
) -> None:
    alias = f"ux-{uuid.uuid4().hex[:6]}"
    project = _project(tmp_path, EXAMPLE, alias)
    follow: subprocess.Popen[str] | None = None
    proc = subprocess.Popen(
        [sys.executable, "-m", "falemu", "up", "--port", "0"],
        cwd=project,
        env=_env(tmp_path, base_image),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        seen: list[str] = []
        for line in proc.stdout:
            seen.append(line.rstrip("\n"))
            if line.startswith("press Ctrl-C to stop"):
                break
        text = "\n".join(seen)
        assert f"  App id local/{alias}" in seen, text
        sync = next(line.split()[1] for line in seen if line.startswith("  Sync   "))
        assert "LABEL falemu." not in text
        assert "(HTTPS on the same port)" in text
        follow = subprocess.Popen(
            [sys.executable, "-m", "falemu", "logs", "-f", alias],
            env=_env(tmp_path, base_image),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert follow.stdout is not None
        followed = [follow.stdout.readline()]  # the tail: the runner has started, so there is one
        response = httpx.post(f"{sync}/greet", json={"name": "ux"}, timeout=30)
        assert response.status_code == 200
        assert response.json()["message"] == "Hello, ux."
        for line in follow.stdout:
            followed.append(line)
            if '"POST /greet HTTP/1.1" 200' in line:
                break
        proc.send_signal(signal.SIGINT)
        rest, err = proc.communicate(timeout=60)
        logs_out, logs_err = follow.communicate(timeout=30)
        logs_out = "".join(followed) + logs_out
    finally:
        for child in (proc, follow):
            if child is not None and child.poll() is None:
                child.kill()
                child.wait()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert rest.rstrip().splitlines()[-1] == "stopped: every runner of this falemu up is gone"
    assert "stopped: falemu up is stopping (shutdown)" in rest
    assert _containers(docker_client, alias) == []
    # `falemu logs -f` from another terminal saw the request and ends, saying why, when falemu up stops.
    assert follow is not None
    assert follow.returncode == 0, logs_err
    assert f"[{alias}-" in logs_out
    assert '"POST /greet HTTP/1.1" 200' in logs_out
    assert logs_err.startswith("the falemu up at http://127.0.0.1:"), logs_err
    assert logs_err.endswith(" stopped\n")


@pytest.mark.parametrize(
    ("app", "error", "hint"),
    [
        (
            "exits-at-start",
            "exited with code 3 during start-up",
            "hint: its last log line: fatal: MODEL_PATH is not set",
        ),
        ("broken-build", "failed at step 3/", "hint: fix that Dockerfile step. Its last output lines:"),
        (
            "sleeps-forever",
            "was not ready within startup_timeout (3 s): GET / on port 8000 never answered",
            "hint: the server printed nothing: check that it starts and listens on 0.0.0.0:8000, "
            "or raise startup_timeout if it is only slow",
        ),
    ],
)
def test_an_app_that_cannot_start_ends_up_with_error_and_hint(
    tmp_path: Path, base_image: str, docker_client: Any, app: str, error: str, hint: str
) -> None:
    alias = f"ux-{uuid.uuid4().hex[:6]}"
    project = _project(tmp_path, APPS / app, alias, startup_timeout=3 if app == "sleeps-forever" else 20)
    done = subprocess.run(
        [sys.executable, "-m", "falemu", "up", "--port", "0"],
        cwd=project,
        env=_env(tmp_path, base_image),
        capture_output=True,
        text=True,
        timeout=120,
    )
    # A Dockerfile that does not build is the project's mistake (2); a runner that does not start, the app's (1).
    assert done.returncode == (2 if app == "broken-build" else 1), done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("error: "))
    assert error in lines[start]
    assert lines[start + 1] == hint
    assert "RunnerError.logs" not in done.stderr  # a library detail, not for the command line
    # The build's own output explains the failure; the engine's bookkeeping lines do not.
    assert "Removing intermediate container" not in done.stderr
    assert "---> Running in" not in done.stderr
    if app == "broken-build":
        assert "  error: libfoo.so not found" in lines[start + 2 :]
    assert _containers(docker_client, alias) == []
