"""HTTP and HTTPS on one port (told apart by the first byte), and connections that never send a request.

The gateway is served as `falemu up` serves it (GatewayServer, uvloop); every test runs on the fast path
and on the ASGI path (the ``harness`` fixture).
"""

from __future__ import annotations

import json
import resource
import socket
import ssl
import time
from pathlib import Path

import httpx
import pytest

from falemu.gateway import limits
from falemu.gateway.harness import GatewayHarness
from falemu.gateway.keys import KeyStore
from falemu.gateway.tls import client_bundle
from tests.unit.gateway_support import app_config, wait_for


@pytest.fixture
def tls_home(isolated_home: Path) -> str:
    """falemu's CA in a folder of this test; returns the CA bundle clients verify with."""
    return client_bundle()


def _gateway_port(harness: GatewayHarness) -> int:
    assert harness.gateway is not None
    return harness.gateway.port


def test_http_and_https_on_the_same_port(harness: GatewayHarness, tls_home: str) -> None:
    url = harness.serve([app_config("echo")])
    https = url.replace("http://", "https://")
    assert httpx.get(url + "/local/echo/fast").json() == {"ok": True}
    with httpx.Client(verify=tls_home) as client:
        response = client.get(https + "/local/echo/fast")
        assert response.json() == {"ok": True}
        assert response.headers["x-fal-request-id"]
        assert client.get(https.replace("127.0.0.1", "localhost") + "/local/echo/fast").status_code == 200
        echoed = client.post(https + "/local/echo/echo?x=1", json={"a": 1}).json()
        assert echoed["path"] == "/echo"
        assert json.loads(echoed["body"]) == {"a": 1}
        with client.stream("POST", https + "/local/echo/stream?n=3", json={}) as resp:
            events = [line for line in resp.iter_lines() if line.startswith("data:")]
        assert len(events) == 3
        submitted = client.post(https + "/queue/local/echo/echo", json={"q": 1}).json()
        wait_for(lambda: client.get(submitted["status_url"].replace("http://", "https://")).status_code == 200)
    with pytest.raises(httpx.ConnectError, match=r"(?i)certificate"):
        httpx.get(https + "/local/echo/fast", verify=ssl.create_default_context())  # the system roots only
    assert httpx.get(url + "/local/echo/fast").status_code == 200  # plain HTTP still, after TLS


def test_websockets_upgrade_after_the_first_byte_was_read(harness: GatewayHarness, tls_home: str) -> None:
    from websockets.sync.client import connect

    url = harness.serve([app_config("echo")])
    for ws_url, options in (
        (url.replace("http://", "ws://"), {}),
        (url.replace("http://", "wss://"), {"ssl": ssl.create_default_context(cafile=tls_home)}),
    ):
        with connect(ws_url + "/local/echo/chat", **options) as ws:  # type: ignore[arg-type]
            assert json.loads(ws.recv(timeout=10))["path"] == "/chat"
            ws.send("hi")
            assert ws.recv(timeout=10) == "echo-0: hi"


def test_the_asyncio_event_loop_serves_both_too(keys: KeyStore, tls_home: str) -> None:
    harness = GatewayHarness(keys, loop="asyncio")
    try:
        url = harness.serve([app_config("echo")])
        assert httpx.get(url + "/local/echo/fast").json() == {"ok": True}
        https = url.replace("http://", "https://")
        assert httpx.get(https + "/local/echo/fast", verify=tls_home).json() == {"ok": True}
    finally:
        harness.close()


def test_open_files_limit_is_raised_to_the_hard_limit(harness: GatewayHarness) -> None:
    harness.serve([app_config("echo")])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert soft == (1 << 20 if hard == resource.RLIM_INFINITY else min(hard, 1 << 20))


def _closed_by_peer(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(65536) == b""
    except BlockingIOError:
        return False
    except OSError:  # reset
        return True


def _drain_answer(sock: socket.socket) -> bytes:
    data = b""
    sock.settimeout(10)
    while True:
        try:
            chunk = sock.recv(65536)
        except OSError:
            return data
        if not chunk:
            return data
        data += chunk


@pytest.mark.timeout(120)
def test_connections_that_never_finish_a_head_are_closed_and_others_are_served(
    harness: GatewayHarness, tls_home: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(limits, "HEAD_TIMEOUT", 1.5)
    harness.serve([app_config("echo")])
    port = _gateway_port(harness)
    idle: list[socket.socket] = []
    try:
        for i in range(200):
            sock = socket.create_connection(("127.0.0.1", port))
            kind = i % 4
            if kind == 1:
                sock.sendall(b"GET /local/echo/fast HTTP/1.1\r\nHost: x\r\n")  # a head that never ends
            elif kind == 2:
                sock.sendall(b"\x16")  # a TLS record that never becomes a handshake
            elif kind == 3:
                sock.sendall(b"G")
            idle.append(sock)
        # Meanwhile a normal caller is served, over HTTP and HTTPS.
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(base + "/local/echo/fast", timeout=10).json() == {"ok": True}
        https = f"https://127.0.0.1:{port}"
        assert httpx.get(https + "/local/echo/fast", verify=tls_home, timeout=10).json() == {"ok": True}
        # A head that trickles in, a byte a second, is cut at the same limit: it never extends it.
        trickle = socket.create_connection(("127.0.0.1", port))
        idle.append(trickle)
        started = time.monotonic()
        for byte in b"GET /local/echo/fast HTTP/1.1\r\nX-Slow: aaaaaaaaaa":
            if _closed_by_peer(trickle):
                break
            try:
                trickle.sendall(bytes([byte]))
            except OSError:
                break
            time.sleep(0.2)
            if time.monotonic() - started > 30:
                break
        wait_for(lambda: all(_closed_by_peer(sock) for sock in idle), timeout=30)
    finally:
        for sock in idle:
            sock.close()
    # The partial heads were told why (408), the silent ones just closed.
    partial = socket.create_connection(("127.0.0.1", port))
    partial.sendall(b"GET /local/echo/fast HTTP/1.1\r\nHost: x\r\n")
    answer = _drain_answer(partial)
    partial.close()
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert json.loads(answer.partition(b"\r\n\r\n")[2])["error_type"] == "bad_request"
    assert httpx.get(f"http://127.0.0.1:{port}/local/echo/fast", timeout=10).status_code == 200


@pytest.mark.timeout(120)
def test_near_the_connection_limit_the_oldest_idle_connections_are_closed(
    harness: GatewayHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(limits, "MAX_CONNECTIONS", 40)
    harness.serve([app_config("echo")], timeout_keep_alive=300)  # only the limit closes connections here
    port = _gateway_port(harness)
    idle: list[socket.socket] = []
    try:
        # Kept-alive connections that served a request, then went quiet, and silent ones.
        for i in range(120):
            sock = socket.create_connection(("127.0.0.1", port))
            if i % 2:
                sock.sendall(b"GET /local/echo/fast HTTP/1.1\r\nHost: x\r\n\r\n")
                sock.settimeout(10)
                assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
            idle.append(sock)
        with httpx.Client(timeout=10) as client:  # a new caller is served at once
            for _ in range(3):
                assert client.get(f"http://127.0.0.1:{port}/local/echo/fast").json() == {"ok": True}
        wait_for(lambda: sum(_closed_by_peer(sock) for sock in idle) >= 80, timeout=20)
        # The oldest went first: the newest idle connections still stand.
        assert not any(_closed_by_peer(sock) for sock in idle[-10:])
    finally:
        for sock in idle:
            sock.close()
