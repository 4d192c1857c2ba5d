"""A fal.App on the process runtime (no Docker): served as `fal run --local` serves it, in this Python."""

from __future__ import annotations

import dataclasses
import socket
import time
from pathlib import Path

import httpx

from falemu.config.falapp import resolve
from falemu.runtime.base import RunnerSpec
from falemu.runtime.process import ProcessRuntime
from falemu.testing import wait_until

APPS = Path(__file__).resolve().parents[1] / "apps" / "falapp"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_fal_app_serves_in_a_host_process_with_setup_and_teardown(tmp_path: Path) -> None:
    app = resolve(None, str(APPS / "apps.py::Lifecycle"))
    app = dataclasses.replace(app, exposed_port=_free_port(), metrics_port=_free_port())
    runtime = ProcessRuntime()
    prepared = runtime.prepare(app)
    started = time.monotonic()
    runner = runtime.start(RunnerSpec(prepared, "p1", "local", tmp_path / "data", env={"FAL_KEY": "id:secret"}))
    try:
        assert time.monotonic() - started >= 1.4  # ready only after setup() (it sleeps 1.5 s)
        answer = httpx.post(f"{runner.url}/echo", json={"text": "local"}, timeout=30).json()
        assert answer["text"] == "local"
        assert answer["answered_at"] > answer["setup_finished_at"]
        assert answer["env"]["IS_ISOLATE_AGENT"] == "1"
        assert answer["env"]["FAL_KEY"] == "id:secret"
        assert httpx.get(f"http://127.0.0.1:{app.metrics_port}/metrics", timeout=10).status_code == 200
    finally:
        runtime.stop(runner, grace=10)
    wait_until(
        lambda: "falemu-test: teardown ran" in "\n".join(runtime.logs(runner)), timeout=10, what="teardown output"
    )
