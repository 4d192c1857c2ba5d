"""An unchanged ``falemu up`` begins its runner before the rest of falemu loads (falemu.prelaunch), on the real engine.

Each test runs the real ``falemu up`` (``python -m falemu up``) on a direct-server app, twice or more in
the same folder and environment: the first run leaves its launch plan, the next ones use it. Containers
are counted by their owner label (``<pid>@<host>``) and the engine's own event stream, so other suites on
the same engine do not disturb the counts.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from up_process import UpProcess

pytestmark = pytest.mark.docker

SLOW = Path(__file__).resolve().parents[1] / "apps" / "slow"


class Up(UpProcess):
    """``falemu up --json`` of ``project`` with ``args``, its events read line by line."""

    def __init__(self, env: dict[str, str], project: Path, *args: str) -> None:
        self.started = time.time()
        self.argv = ["up", "--runtime", "docker", "--json", *args]
        proc = subprocess.Popen(
            [sys.executable, "-m", "falemu", *self.argv],
            cwd=project,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        super().__init__(proc)

    @property
    def owner(self) -> str:
        return f"{self.proc.pid}@{socket.gethostname()}"

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(timeout=60)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    folder = tmp_path / "slowpoke"
    shutil.copytree(SLOW, folder)
    (folder / ".git").mkdir()  # the project's root for fal's rules
    return folder


@pytest.fixture
def ups(docker_client: Any) -> Iterator[list[Up]]:
    started: list[Up] = []
    yield started
    for up in started:
        if up.proc.poll() is None:
            up.proc.kill()
            up.proc.wait(timeout=60)
        for container in owned_by(docker_client, up.owner):
            container.remove(force=True)


def owned_by(docker_client: Any, owner: str) -> list[Any]:
    return list(docker_client.containers.list(all=True, filters={"label": f"falemu.owner={owner}"}))


def created_by(docker_client: Any, owner: str, since: float) -> list[str]:
    """Names of the containers the engine created for ``owner`` since ``since`` (its event stream)."""
    events = docker_client.events(
        since=int(since) - 1,
        until=int(time.time()) + 1,
        decode=True,
        filters={"type": "container", "event": "create", "label": f"falemu.owner={owner}"},
    )
    return [event["Actor"]["Attributes"]["name"] for event in events]


def plans(env: dict[str, str]) -> list[Path]:
    return sorted((Path(env["XDG_CACHE_HOME"]) / "falemu" / "launch").glob("*.json"))


def first_run(env: dict[str, str], project: Path, ups: list[Up], *args: str) -> Up:
    up = Up(env, project, *args)
    ups.append(up)
    ready = up.wait_for("RunnerReady")
    assert ready["early"] is False  # nothing was planned yet
    up.wait_for("Ready")
    assert up.stop() == 0
    assert len(plans(env)) == 1
    return up


def test_an_unchanged_up_adopts_the_runner_it_began_first(
    env: dict[str, str], project: Path, docker_client: Any, ups: list[Up]
) -> None:
    first_run(env, project, ups, "--port", "0")

    second = Up(env, project, "--port", "0")
    ups.append(second)
    ready = second.wait_for("RunnerReady")
    assert ready["early"] is True, second.seen
    url = second.wait_for("Ready")["url"]
    answer = httpx.post(f"{url}/local/slowpoke/slow?seconds=0", timeout=60)
    assert answer.status_code == 200, answer.text
    containers = owned_by(docker_client, second.owner)
    assert [c.labels["falemu.runner"] for c in containers] == [ready["runner"]]  # the early one, adopted
    assert len(created_by(docker_client, second.owner, second.started)) == 1  # and no second create
    assert second.stop() == 0
    assert owned_by(docker_client, second.owner) == []

    # A changed file of the project: the plan is not used.
    os.utime(project / "pyproject.toml", ns=(time.time_ns(), time.time_ns()))
    third = Up(env, project, "--port", "0")
    ups.append(third)
    assert third.wait_for("RunnerReady")["early"] is False
    third.wait_for("Ready")
    assert len(created_by(docker_client, third.owner, third.started)) == 1
    assert third.stop() == 0


def test_a_different_request_is_not_adopted_and_its_container_is_removed(
    env: dict[str, str], project: Path, docker_client: Any, ups: list[Up]
) -> None:
    first_run(env, project, ups, "--port", "0")
    # The plan's request differs from what falemu up makes now (as after a change no file stamp shows).
    plan = plans(env)[0]
    data = json.loads(plan.read_text())
    body = json.loads(data["runners"][0]["body"])
    body["Env"].append("PLANNED_ONLY=1")
    data["runners"][0]["body"] = json.dumps(body)
    plan.write_text(json.dumps(data))

    second = Up(env, project, "--port", "0")
    ups.append(second)
    ready = second.wait_for("RunnerReady")
    assert ready["early"] is False
    second.wait_for("Ready")
    assert len(created_by(docker_client, second.owner, second.started)) == 2  # the early one, then its own
    deadline = time.monotonic() + 30
    while len(owned_by(docker_client, second.owner)) > 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    (serving,) = owned_by(docker_client, second.owner)
    assert serving.labels["falemu.runner"] == ready["runner"]
    assert "PLANNED_ONLY=1" not in serving.attrs["Config"]["Env"]
    assert second.stop() == 0
    assert owned_by(docker_client, second.owner) == []


def test_an_up_that_fails_after_its_early_launch_leaves_no_container(
    env: dict[str, str], project: Path, docker_client: Any, ups: list[Up]
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    first_run(env, project, ups, "--port", str(port))

    with socket.socket() as taken:  # the gateway's port is taken now: falemu up exits 2 after its early launch
        taken.bind(("127.0.0.1", port))
        taken.listen()
        second = Up(env, project, "--port", str(port))
        ups.append(second)
        assert second.proc.wait(timeout=60) == 2
    assert len(created_by(docker_client, second.owner, second.started)) == 1  # it did begin one ...
    assert owned_by(docker_client, second.owner) == []  # ... and removed it on its way out


def test_the_early_launch_runs_before_the_rest_of_falemu_is_imported(
    env: dict[str, str], project: Path, docker_client: Any, ups: list[Up]
) -> None:
    first = first_run(env, project, ups, "--port", "0")
    # What `falemu up` runs first, with the same command line, folder and environment, in a process of its own.
    script = (
        "import json, sys\n"
        "from falemu import prelaunch\n"
        f"prelaunch.early(['falemu', *{first.argv!r}])\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('click', 'docker', 'http', 'typing')"
        " or m.startswith(('falemu.cli', 'falemu.runtime', 'falemu.config')))\n"
        "print(json.dumps({'ids': [item.container_id for item in prelaunch._state.launched], 'heavy': heavy}))\n"
        "sys.stdout.flush()\n"
        "input()\n"  # stays until the test has looked
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script], cwd=project, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        assert proc.stdin is not None
        seen = json.loads(proc.stdout.readline())
        assert seen["heavy"] == []
        (container_id,) = seen["ids"]
        container = docker_client.containers.get(container_id)
        assert container.status == "running"
        assert container.labels["falemu.owner"] == f"{proc.pid}@{socket.gethostname()}"
        proc.stdin.write("\n")
        proc.stdin.close()
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    # Nothing adopted it: the process removed it at exit.
    assert owned_by(docker_client, f"{proc.pid}@{socket.gethostname()}") == []


def test_a_sigterm_while_the_rest_of_falemu_loads_removes_the_early_container(
    env: dict[str, str], project: Path, docker_client: Any, ups: list[Up]
) -> None:
    first_run(env, project, ups, "--port", "0")

    second = Up(env, project, "--port", "0")
    ups.append(second)
    # The engine's create event of the early container: falemu up is still in its early launch, or loading.
    events = docker_client.events(
        since=int(second.started) - 1,
        decode=True,
        filters={"type": "container", "event": "create", "label": f"falemu.owner={second.owner}"},
    )
    try:
        next(iter(events))
        second.proc.send_signal(signal.SIGTERM)
    finally:
        events.close()
    assert second.proc.wait(timeout=60) != -signal.SIGTERM  # stopped, not killed
    assert owned_by(docker_client, second.owner) == []


UPLOADER_FIRST = """\
import socket, threading, uvicorn
try:
    sock = socket.socket(socket.AF_UNIX)
    sock.connect("/run/fal/api.sock")  # at once, before the runner's server even loads
except OSError as exc:
    print(f"uploader: {exc}", flush=True)
else:
    def ask():
        sock.sendall(b"GET /v1/uploads/none HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n")
        print("uploader answered:", sock.makefile("rb").readline().decode().strip(), flush=True)
    threading.Thread(target=ask).start()
uvicorn.run("server:app", host="0.0.0.0", port=8000, log_level="warning")
"""


def test_an_early_runner_finds_the_uploader_socket_at_once(
    env: dict[str, str], project: Path, docker_client: Any, ups: list[Up]
) -> None:
    (project / "first.py").write_text(UPLOADER_FIRST)
    dockerfile = (project / "Dockerfile").read_text().replace("COPY server.py /app/server.py", "COPY *.py /app/")
    (project / "Dockerfile").write_text(
        dockerfile.replace('CMD ["python3", "-m", "uvicorn"', 'CMD ["python3", "first.py"] #')
    )
    first_run(env, project, ups, "--port", "0")

    second = Up(env, project, "--port", "0")
    ups.append(second)
    assert second.wait_for("RunnerReady")["early"] is True
    # The runner connected before this falemu up's CDN was even loaded, and the CDN answered it.
    line = ""
    while not line.startswith("uploader"):
        line = second.wait_for("RunnerLog", timeout=60)["line"]
    assert line == "uploader answered: HTTP/1.1 404 Not Found"
    assert second.stop() == 0
