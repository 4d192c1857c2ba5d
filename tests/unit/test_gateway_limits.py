"""Limits on request heads: 414 and 431 as fal-style errors, before anything is forwarded.

Every test runs on the fast path and on the ASGI path (the ``harness`` fixture); the limits sit in the
gateway's protocol, so sync, queue and mounted routes are all behind them.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time

import httpx
import pytest

from falemu.gateway import limits
from falemu.gateway.harness import GatewayHarness
from tests.unit.gateway_support import app_config


def _exchange(port: int, head: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send a raw request head; returns the status, headers and body of the answer (read to EOF)."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.settimeout(15)
        try:
            sock.sendall(head)
        except OSError:  # the gateway answered and closed while we were still sending
            pass
        data = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except OSError:
                break
            if not chunk:
                break
            data += chunk
    head_part, _, body = data.partition(b"\r\n\r\n")
    lines = head_part.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return status, headers, body


def _probe_calls(harness: GatewayHarness) -> int:
    return len(harness.probes["echo-0"].calls)


def _assert_refusal(status: int, headers: dict[str, str], body: bytes, expected: int) -> None:
    assert status == expected
    assert headers["content-type"] == "application/json"
    assert headers["x-fal-request-id"]
    assert headers["connection"] == "close"
    data = json.loads(body)
    assert data["error_type"] == "bad_request"
    assert data["detail"]


@pytest.mark.parametrize("prefix", ["/local/echo/fast", "/queue/local/echo/submit", "/_falemu/health"])
def test_a_request_target_over_the_limit_is_414(harness: GatewayHarness, prefix: str) -> None:
    url = harness.serve([app_config("echo")])
    port = int(url.rsplit(":", 1)[1])
    target = prefix + "?q=" + "a" * limits.MAX_URL
    status, headers, body = _exchange(port, f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    _assert_refusal(status, headers, body, 414)
    assert _probe_calls(harness) == 0
    under = prefix + "?q=" + "a" * (limits.MAX_URL - len(prefix) - 10)
    assert httpx.get(f"http://127.0.0.1:{port}{under}").status_code in (200, 404, 405)


def test_header_fields_over_the_size_limit_are_431(harness: GatewayHarness) -> None:
    url = harness.serve([app_config("echo")])
    port = int(url.rsplit(":", 1)[1])
    big = b"x-big: " + b"a" * (limits.MAX_HEADER_BYTES + 1) + b"\r\n"
    status, headers, body = _exchange(port, b"GET /local/echo/fast HTTP/1.1\r\nHost: x\r\n" + big + b"\r\n")
    _assert_refusal(status, headers, body, 431)
    many_small = b"".join(b"x-h%d: %s\r\n" % (i, b"b" * 1000) for i in range(80))  # 80 KiB in 80 fields
    status, _, _ = _exchange(port, b"GET /local/echo/fast HTTP/1.1\r\nHost: x\r\n" + many_small + b"\r\n")
    assert status == 431
    assert _probe_calls(harness) == 0
    # Just under the limit is forwarded whole.
    fits = httpx.get(url + "/local/echo/echo", headers={"x-big": "a" * (limits.MAX_HEADER_BYTES - 2048)})
    assert fits.status_code == 200
    assert len(fits.json()["headers"]["x-big"]) == limits.MAX_HEADER_BYTES - 2048


def test_more_header_fields_than_the_limit_are_431(harness: GatewayHarness) -> None:
    url = harness.serve([app_config("echo")])
    port = int(url.rsplit(":", 1)[1])
    fields = b"".join(b"x-h%d: v\r\n" % i for i in range(limits.MAX_HEADERS))
    status, headers, body = _exchange(port, b"GET /local/echo/fast HTTP/1.1\r\nHost: x\r\n" + fields + b"\r\n")
    _assert_refusal(status, headers, body, 431)
    assert "header fields" in json.loads(body)["detail"]
    assert _probe_calls(harness) == 0
    allowed = {f"x-h{i}": "v" for i in range(limits.MAX_HEADERS - 10)}  # httpx adds a few of its own
    assert httpx.get(url + "/local/echo/echo", headers=allowed).status_code == 200


def _rss_mib() -> float:
    with open(f"/proc/{os.getpid()}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads memory use from /proc")
@pytest.mark.timeout(120)
def test_a_huge_header_is_refused_early_without_holding_it_and_others_are_served(harness: GatewayHarness) -> None:
    url = harness.serve([app_config("echo")])
    port = int(url.rsplit(":", 1)[1])
    before = _rss_mib()
    peak = [before]
    sending = threading.Event()
    sending.set()

    def sample() -> None:
        while sending.is_set():
            peak[0] = max(peak[0], _rss_mib())
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    answer = b""
    sent = 0
    served_meanwhile: list[int] = []
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.settimeout(15)
        sock.sendall(b"GET /local/echo/fast HTTP/1.1\r\nHost: x\r\nX-Huge: ")
        chunk = b"a" * (1 << 20)
        try:
            while sent < 100 * (1 << 20):  # up to 100 MB of one header value
                sock.sendall(chunk)
                sent += len(chunk)
                if sent == 8 * (1 << 20):
                    served_meanwhile.append(httpx.get(url + "/local/echo/fast", timeout=10).status_code)
        except OSError:
            pass
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                answer += data
        except OSError:
            pass
    sending.clear()
    sampler.join()
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert served_meanwhile in ([], [200])
    assert httpx.get(url + "/local/echo/fast", timeout=10).status_code == 200
    assert peak[0] - before < 50, f"memory grew by {peak[0] - before:.0f} MiB while refusing the head"
    assert _probe_calls(harness) == 0
