"""Issue 3 item 5 on the real engine: stopping a runner sends SIGTERM and waits the app's
``termination_grace_period_seconds`` before the kill, so an app's shutdown work finishes.

The app (written to a temporary folder) answers HTTP on 8000; on SIGTERM it writes ``term`` to /data,
works for one second, writes ``clean`` and exits. The stop uses the app's configured grace period
(no explicit ``grace``), as the scaler does.
"""

from __future__ import annotations

import dataclasses
import secrets
from pathlib import Path
from typing import Any

import pytest

from falemu.config.model import AppConfig, AppShape, ImageConfig, ScalingConfig

pytestmark = pytest.mark.docker

SERVER = """\
import http.server, os, signal, sys, time
from pathlib import Path

RUNNER = os.environ.get("FAL_JOB_ID", "x")

def on_term(signum, frame):
    Path(f"/data/{RUNNER}.term").write_text("term")
    time.sleep(1)
    Path(f"/data/{RUNNER}.clean").write_text("clean")
    sys.exit(0)

signal.signal(signal.SIGTERM, on_term)

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

http.server.HTTPServer(("0.0.0.0", 8000), Handler).serve_forever()
"""

# Serves HTTP like the app but ignores SIGTERM: only the kill after the grace period ends it.
IGNORER = (
    "python3",
    "-c",
    "import http.server, signal; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "h = type('H', (http.server.BaseHTTPRequestHandler,), "
    "{'do_GET': lambda s: (s.send_response(200), s.end_headers())}); "
    "http.server.HTTPServer(('0.0.0.0', 8000), h).serve_forever()",
)

DOCKERFILE = """\
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}
COPY server.py /server.py
CMD ["python3", "-u", "/server.py"]
"""


@pytest.fixture(scope="module")
def graceful(tmp_path_factory: pytest.TempPathFactory, docker_runtime: Any, rt_apps: Any) -> Any:
    root = tmp_path_factory.mktemp("graceful")
    (root / "server.py").write_text(SERVER)
    (root / "Dockerfile").write_text(DOCKERFILE)
    app = AppConfig(
        name="graceful",
        alias=rt_apps.unique("rt-graceful"),
        shape=AppShape.DIRECT_SERVER,
        project_root=root,
        image=ImageConfig(dockerfile=root / "Dockerfile", build_args={"BASE_IMAGE": "python:3.11-slim"}),
        exposed_port=8000,
        scaling=ScalingConfig(termination_grace_period_seconds=5),
    )
    return docker_runtime.prepare(app)


def test_stop_waits_the_grace_period_for_the_apps_shutdown(
    graceful: Any, docker_runtime: Any, rt_apps: Any, tmp_path: Path
) -> None:
    from falemu.runtime.base import RunnerSpec

    runner_id = f"g{secrets.token_hex(3)}"
    runner = docker_runtime.start(RunnerSpec(graceful, runner_id, "local", tmp_path, gpu="off"))
    assert docker_runtime.is_alive(runner)
    docker_runtime.stop(runner)
    assert (tmp_path / f"{runner_id}.term").read_text() == "term"  # it got SIGTERM ...
    assert (tmp_path / f"{runner_id}.clean").read_text() == "clean"  # ... and the time to finish
    assert rt_apps.containers(docker_runtime.client, graceful.app.alias) == []


def test_an_app_that_ignores_sigterm_is_killed_after_the_grace_period(
    graceful: Any, docker_runtime: Any, rt_apps: Any, tmp_path: Path
) -> None:
    from falemu.runtime.base import RunnerSpec

    app = dataclasses.replace(graceful.app, scaling=ScalingConfig(termination_grace_period_seconds=1))
    prepared = dataclasses.replace(graceful, app=app)
    runner = docker_runtime.start(RunnerSpec(prepared, "ignorer", "local", tmp_path, gpu="off", command=IGNORER))
    docker_runtime.stop(runner)
    assert rt_apps.containers(docker_runtime.client, app.alias) == []
    assert not (tmp_path / "ignorer.clean").exists()
