"""``falemu up`` end to end as a user runs it: a subprocess, real engine, then Ctrl-C.

While it runs, ``falemu ps`` and ``falemu logs`` from "another terminal" (other subprocesses with the
same user folders) see its runners and their logs. After SIGINT no container made by it is left.
"""

from __future__ import annotations

import json
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


def falemu(*args: str) -> list[str]:
    return [sys.executable, "-m", "falemu", *args]


Up = UpProcess


@pytest.fixture
def up(env: dict[str, str]) -> Iterator[Up]:
    proc = subprocess.Popen(
        falemu("up", "--project", str(SLOW), "--port", "0", "--runtime", "docker", "--json"),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        yield Up(proc)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_up_serves_then_sigint_leaves_nothing_behind(up: Up, env: dict[str, str], docker_client: Any) -> None:
    serving = up.wait_for("Serving")
    up.wait_for("Ready", timeout=30)
    url = serving["url"]
    assert url.endswith("/local/slowpoke")
    assert serving["endpoints"] == ["/health", "/record", "/slow"]
    (warm,) = serving["runners"]

    answer = httpx.post(f"{url}/slow?seconds=0", timeout=60)
    assert answer.status_code == 200
    assert answer.json()["runner"] == warm["id"]

    # Another terminal: `falemu ps` and `falemu logs` find this falemu up through its state file.
    for _ in range(20):  # the gateway releases the runner just after the response is sent
        ps = subprocess.run(falemu("ps", "--json"), env=env, capture_output=True, text=True, timeout=60, check=True)
        (instance,) = json.loads(ps.stdout)
        (app,) = instance["apps"]
        if app["runners"] and app["runners"][0]["served"] == 1:
            break
        time.sleep(0.1)
    assert instance["pid"] == up.proc.pid
    assert [r["id"] for r in app["runners"]] == [warm["id"]]
    assert app["runners"][0]["served"] == 1
    logs = subprocess.run(falemu("logs", "slowpoke"), env=env, capture_output=True, text=True, timeout=60, check=True)
    assert any(line.startswith(f"[{warm['id']}] ") for line in logs.stdout.splitlines()), logs.stdout

    owner = f"{up.proc.pid}@{socket.gethostname()}"
    assert docker_client.containers.list(all=True, filters={"label": f"falemu.owner={owner}"})

    up.proc.send_signal(signal.SIGINT)
    up.wait_for("Stopped", timeout=60)
    assert up.proc.wait(timeout=60) == 0
    assert docker_client.containers.list(all=True, filters={"label": f"falemu.owner={owner}"}) == []
    gone = subprocess.run(falemu("ps", "--json"), env=env, capture_output=True, text=True, timeout=60, check=True)
    assert json.loads(gone.stdout) == []
