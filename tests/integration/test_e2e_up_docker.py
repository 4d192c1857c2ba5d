"""Issue 3's cleanup promise with the real ``falemu up`` process: SIGKILL, then the next start cleans up.

A first ``falemu up`` is killed with SIGKILL (nothing can run at exit), so its runner stays behind; the
next ``falemu up`` removes it at start-up because its owner process is gone, and after that one's
Ctrl-C (SIGINT) no container of either process is left. Containers are counted by their owner label
(``<pid>@<host>``), so other suites on the same engine do not disturb the counts.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from docker_support import remove_app_images
from up_process import UpProcess

pytestmark = pytest.mark.docker

SLOW = Path(__file__).resolve().parents[1] / "apps" / "slow"


class Up(UpProcess):
    """A ``falemu up --json`` subprocess whose events are read line by line."""

    def __init__(self, env: dict[str, str], project: Path = SLOW) -> None:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "falemu",
                "up",
                "--project",
                str(project),
                "--port",
                "0",
                "--runtime",
                "docker",
                "--json",
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        super().__init__(proc)

    @property
    def owner(self) -> str:
        return f"{self.proc.pid}@{socket.gethostname()}"

    def end(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=60)


@pytest.fixture
def ups(docker_client: Any) -> Iterator[list[Up]]:
    started: list[Up] = []
    yield started
    for up in started:
        up.end()
        for container in docker_client.containers.list(all=True, filters={"label": f"falemu.owner={up.owner}"}):
            container.remove(force=True)


def owned_by(docker_client: Any, up: Up) -> list[Any]:
    return list(docker_client.containers.list(all=True, filters={"label": f"falemu.owner={up.owner}"}))


def test_sigkill_then_next_start_then_sigint_leaves_no_container(
    env: dict[str, str], docker_client: Any, ups: list[Up]
) -> None:
    first = Up(env)
    ups.append(first)
    first.wait_for("Ready")
    assert len(owned_by(docker_client, first)) == 1

    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait(timeout=60)
    assert len(owned_by(docker_client, first)) == 1  # SIGKILL cannot be caught: the runner is left ...

    second = Up(env)
    ups.append(second)
    second.wait_for("Serving")
    assert owned_by(docker_client, first) == []  # ... until the next falemu start removes it
    assert len(owned_by(docker_client, second)) == 1

    second.proc.send_signal(signal.SIGINT)
    assert second.proc.wait(timeout=60) == 0
    assert owned_by(docker_client, second) == []
    assert owned_by(docker_client, first) == []


TWO_APPS = """\
[project]
name = "pair"
version = "1.0.0"

[tool.fal.apps.left-SUFFIX]
exposed_port = 8000
auth = "public"
image = { dockerfile = "Dockerfile", build_args = { BASE_IMAGE = "python:3.11-slim" } }
health_check = { path = "/health" }

[tool.fal.apps.right-SUFFIX]
exposed_port = 8000
auth = "public"
image = { dockerfile = "Dockerfile", build_args = { BASE_IMAGE = "python:3.11-slim" } }
health_check = { path = "/health" }
"""


def test_up_without_names_serves_every_app_of_the_pyproject(
    env: dict[str, str], docker_client: Any, ups: list[Up], tmp_path: Path
) -> None:
    import secrets

    import httpx

    suffix = secrets.token_hex(3)
    names = [f"left-{suffix}", f"right-{suffix}"]
    project = tmp_path / "pair"
    project.mkdir()
    (project / ".git").mkdir()
    (project / "pyproject.toml").write_text(TWO_APPS.replace("SUFFIX", suffix))
    for name in ("Dockerfile", "server.py"):
        (project / name).write_text((SLOW / name).read_text())
    try:
        up = Up(env, project)
        ups.append(up)
        serving = [up.wait_for("Serving"), up.wait_for("Serving")]
        urls = sorted(s["url"] for s in serving)
        assert [u.rsplit("/", 1)[1] for u in urls] == names
        for url in urls:
            answer = httpx.post(f"{url}/slow?seconds=0", timeout=120)
            assert answer.status_code == 200, answer.text
        up.proc.send_signal(signal.SIGINT)
        assert up.proc.wait(timeout=60) == 0
        assert owned_by(docker_client, up) == []
    finally:
        remove_app_images(docker_client, *names)
