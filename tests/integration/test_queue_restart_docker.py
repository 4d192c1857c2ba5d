"""The durable queue end to end: a real ``falemu up`` subprocess on a fixed port, the real engine.

The app is ``tests/apps/slow``: its ``/record`` endpoint appends the request's id to
``/data/<run>/<runner>.log`` on every execution, so "ran exactly once" is counted on the runners'
side, not taken from falemu's word.
"""

from __future__ import annotations

import asyncio
import collections
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def start(env: dict[str, str]) -> Iterator[Any]:
    procs: list[subprocess.Popen[str]] = []

    def start_up(port: int) -> UpProcess:
        proc = subprocess.Popen(
            falemu("up", "--project", str(SLOW), "--port", str(port), "--runtime", "docker", "--json"),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        procs.append(proc)
        return UpProcess(proc)

    yield start_up
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def stop(up: UpProcess) -> dict[str, Any]:
    """SIGINT, as Ctrl-C: returns the queue's stop summary."""
    up.proc.send_signal(signal.SIGINT)
    summary = up.wait_for("QueueStopped", timeout=120)
    up.wait_for("Stopped", timeout=120)
    assert up.proc.wait(timeout=60) == 0
    return summary


def test_fifty_queued_requests_survive_a_restart_and_each_runs_exactly_once(
    start: Any, env: dict[str, str], tmp_path: Path
) -> None:
    port = free_port()
    up = start(port)
    queue_url = up.wait_for("Serving")["queue_url"]
    up.wait_for("Ready", timeout=60)

    # A second falemu up of the same project and owner: one line, at once, before any build.
    second = subprocess.run(
        falemu("up", "--project", str(SLOW), "--port", "0", "--runtime", "docker"),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert second.returncode == 2, second.stderr
    errors = [line for line in second.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, second.stderr
    assert errors[0].startswith(f"error: the queue of this project is in use by another falemu up (pid {up.proc.pid})")
    assert "\nhint: " in second.stderr

    run = uuid.uuid4().hex

    async def submit_all() -> list[dict[str, Any]]:
        async with httpx.AsyncClient(timeout=60) as client:
            answers = await asyncio.gather(
                *(
                    client.post(f"{queue_url}/record", params={"run": run, "seconds": "0.5"}, json={"i": i})
                    for i in range(50)
                )
            )
        assert all(a.status_code == 200 for a in answers), [a.text for a in answers if a.status_code != 200]
        return [a.json() for a in answers]

    submitted = asyncio.run(submit_all())
    stopped = stop(up)
    assert stopped["queued"] > 0, up.seen[-20:]  # 50 x 0.5 s on at most 2 runners: most still waited
    assert stopped["queued"] + stopped["results"] == 50, stopped
    assert (stopped["requeued"], stopped["failed"]) == (0, 0), stopped  # in flight: finished in the grace period

    again = start(port)
    resumed = again.wait_for("QueueResumed")
    assert (resumed["queued"], resumed["failed"]) == (stopped["queued"], 0), (resumed, stopped)
    again.wait_for("Ready", timeout=60)
    with httpx.Client(timeout=60) as client:
        for data in submitted:  # the URLs returned before the restart
            deadline = time.monotonic() + 120
            while True:
                status = client.get(data["status_url"])
                if status.status_code == 200 and status.json()["status"] == "COMPLETED":
                    break
                assert time.monotonic() < deadline, status.text
                time.sleep(0.2)
            assert "error" not in status.json(), status.json()
            result = client.get(data["response_url"])
            assert result.status_code == 200, result.text
            assert result.json()["request_id"] == data["request_id"]
    executions: collections.Counter[str] = collections.Counter()
    for log in (tmp_path / "data" / run).glob("*.log"):
        executions.update(line for line in log.read_text().splitlines() if line)
    assert executions == {data["request_id"]: 1 for data in submitted}, (stopped, executions)  # each one, once
    final = stop(again)
    assert (final["queued"], final["results"]) == (0, 50)


def rss(pid: int, field: str) -> int:
    """VmRSS / VmHWM (peak) of a process, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} for {pid}")


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc to read peak memory")
def test_five_large_submits_keep_the_gateways_memory_bounded(start: Any) -> None:
    up = start(free_port())
    queue_url = up.wait_for("Serving")["queue_url"]
    up.wait_for("Ready", timeout=60)
    size = 100_000_000  # 100 MB each, under the default limit of 100 MiB
    piece = b"x" * (1 << 20)

    def body() -> Iterator[bytes]:
        left = size
        while left:
            part = piece[: min(left, len(piece))]
            left -= len(part)
            yield part

    with httpx.Client(timeout=120) as client:
        warm = client.post(f"{queue_url}/record", params={"run": "warm"}, content=b"{}")  # code paths loaded
        assert warm.status_code == 200
        Path(f"/proc/{up.proc.pid}/clear_refs").write_text("5")  # the peak starts again from here
        before = rss(up.proc.pid, "VmRSS")
        answers: list[dict[str, Any]] = []

        def submit() -> None:
            resp = client.post(
                f"{queue_url}/record",
                params={"run": "big"},
                content=body(),
                headers={"content-length": str(size), "content-type": "application/octet-stream"},
            )
            assert resp.status_code == 200, resp.text
            answers.append(resp.json())

        threads = [threading.Thread(target=submit) for _ in range(5)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(300)
        assert len(answers) == 5
        for data in answers:
            deadline = time.monotonic() + 300
            while client.get(data["status_url"]).json()["status"] != "COMPLETED":
                assert time.monotonic() < deadline
                time.sleep(0.2)
            assert client.get(data["response_url"]).status_code == 200

    # Over the default limit: refused on the announced length, before any of the body is sent.
    url = httpx.URL(queue_url)
    with socket.create_connection((url.host, url.port or 80), timeout=30) as sock:
        sock.sendall(f"POST {url.path}/record HTTP/1.1\r\nHost: x\r\nContent-Length: {101 << 20}\r\n\r\n".encode())
        assert sock.recv(65536).startswith(b"HTTP/1.1 413 ")
    peak = rss(up.proc.pid, "VmHWM")
    assert peak - before < 100 * 1024 * 1024, f"peak {peak >> 20} MiB, {before >> 20} MiB before 500 MB of submits"
    stop(up)
