"""The gateway as an HTTPS proxy (CONNECT): intercepted hosts, passthrough tunnels, refusals.

Every test runs on the fast path and on the ASGI path (the ``harness`` fixture).
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from falemu.gateway.harness import GatewayHarness
from falemu.gateway.probe import Probe
from falemu.gateway.serve import ThreadedServer
from falemu.gateway.tls import client_bundle, server_ssl_files
from falemu.gateway.tunnel import parse_authority
from tests.unit.gateway_support import app_config, wait_for


@pytest.fixture
def bundle(isolated_home: Path) -> str:
    return client_bundle()


async def upload_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Stands in for a host-mounted service: answers with what it saw."""
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    headers = {k.decode(): v.decode() for k, v in scope["headers"]}
    answer = {
        "host": headers.get("host"),
        "scheme": scope["scheme"],
        "method": scope["method"],
        "path": scope["path"],
        "query": scope["query_string"].decode(),
        "body": len(body),
    }
    data = json.dumps(answer).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": data})


class EchoServer:
    """A TCP server on loopback: echoes what it reads; on EOF it says ``bye`` and closes."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.closed = threading.Event()  # a connection ended (EOF or reset from the other side)
        self.received = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    def _echo(self, conn: socket.socket) -> None:
        with conn:
            try:
                while data := conn.recv(65536):
                    self.received += len(data)
                    conn.sendall(data)
                conn.sendall(b"bye")
            except OSError:
                pass
            self.closed.set()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    server = EchoServer()
    yield server
    server.close()


def _connect(port: int, target: str) -> tuple[socket.socket, bytes]:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.settimeout(15)
    sock.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        if not chunk:
            break
        head += chunk
    return sock, head


def _read_all(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_authority_targets() -> None:
    assert parse_authority(b"rest.fal.ai:443") == ("rest.fal.ai", 443)
    assert parse_authority(b"[::1]:8443") == ("::1", 8443)
    assert parse_authority(b"Rest.Fal.AI:443") == ("rest.fal.ai", 443)
    for bad in (b"rest.fal.ai", b"/path", b"host:0", b"host:99999", b"[nope]:1", b"a/b:1", b":443", b"h:x"):
        assert parse_authority(bad) is None, bad


def test_intercepted_host_is_served_by_its_mount_over_tls(harness: GatewayHarness, bundle: str) -> None:
    url = harness.serve([app_config("echo")])
    assert harness.app is not None
    harness.app.mount_host("rest.fal.ai", upload_app)
    harness.app.mount_host("files.example.test", upload_app)  # not in the server certificate: one is made
    assert harness.app.tunnel_mode("rest.fal.ai", 443) == "intercept"
    assert harness.app.tunnel_mode("example.org", 443) == "passthrough"
    with httpx.Client(proxy=url, verify=bundle, timeout=15) as client:
        seen = client.post(
            "https://rest.fal.ai/storage/upload/initiate?storage_type=fal-cdn-v3", content=b"x" * 300_000
        )
        assert seen.json() == {
            "host": "rest.fal.ai",
            "scheme": "https",
            "method": "POST",
            "path": "/storage/upload/initiate",
            "query": "storage_type=fal-cdn-v3",
            "body": 300_000,
        }
        again = client.get("https://rest.fal.ai/again")  # the same tunnel, kept alive
        assert again.json()["path"] == "/again"
        other = client.get("https://files.example.test:8443/f")
        assert other.json()["host"] == "files.example.test:8443"
    # Without the proxy, the mount answers a request with that Host on the gateway's own port too.
    assert httpx.get(url + "/x", headers={"host": "rest.fal.ai"}).json()["path"] == "/x"
    assert httpx.get(url + "/local/echo/fast").json() == {"ok": True}  # and apps are routed as before


def test_passthrough_relays_both_ways_with_half_close(harness: GatewayHarness, echo: EchoServer) -> None:
    url = harness.serve([app_config("echo")])
    port = int(url.rsplit(":", 1)[1])
    sock, head = _connect(port, f"127.0.0.1:{echo.port}")
    with sock:
        assert head == b"HTTP/1.1 200 Connection Established\r\n\r\n"
        payload = bytes(range(256)) * 8192  # 2 MiB: more than any buffer, so back-pressure is exercised
        sender = threading.Thread(target=sock.sendall, args=(payload,))
        sender.start()
        received = b""
        while len(received) < len(payload):
            chunk = sock.recv(65536)
            assert chunk
            received += chunk
        sender.join()
        assert received == payload
        sock.shutdown(socket.SHUT_WR)  # our half-close reaches the server, which answers and closes
        assert _read_all(sock) == b"bye"
    assert echo.closed.wait(10)


def test_passthrough_to_an_https_server_through_httpx(harness: GatewayHarness, bundle: str) -> None:
    certfile, keyfile, _ = server_ssl_files()
    url = harness.serve([app_config("echo")])
    with (
        ThreadedServer(Probe("elsewhere"), ssl_certfile=certfile, ssl_keyfile=keyfile) as https,
        httpx.Client(proxy=url, verify=bundle, timeout=15) as client,
    ):
        target = f"https://localhost:{https.port}"
        assert client.get(target + "/fast").json() == {"ok": True}
        with client.stream("POST", target + "/stream?n=5", json={}) as resp:
            assert len([line for line in resp.iter_lines() if line.startswith("data:")]) == 5


def test_refused_and_unreachable_tunnels(harness: GatewayHarness, monkeypatch: pytest.MonkeyPatch) -> None:
    url = harness.serve([app_config("echo")])
    port = int(url.rsplit(":", 1)[1])
    assert harness.app is not None
    unused = socket.socket()
    unused.bind(("127.0.0.1", 0))
    closed_port = unused.getsockname()[1]
    unused.close()  # nothing listens there now
    sock, head = _connect(port, f"127.0.0.1:{closed_port}")
    with sock:
        assert head.startswith(b"HTTP/1.1 502 ")
        assert json.loads(_read_all(sock))["error_type"] == "bad_request"
    sock, head = _connect(port, "no-port-here")
    with sock:
        assert head.startswith(b"HTTP/1.1 400 ")
    monkeypatch.setattr(harness.app, "tunnel_mode", lambda host, port: "refuse")
    sock, head = _connect(port, "rest.fal.ai:443")
    with sock:
        assert head.startswith(b"HTTP/1.1 403 ")
        assert b"x-fal-request-id: " in head
        assert "rest.fal.ai:443" in json.loads(_read_all(sock))["detail"]
    with httpx.Client(proxy=url, timeout=15) as client, pytest.raises(httpx.ProxyError, match="403"):
        client.get("https://rest.fal.ai/x")
    assert httpx.get(url + "/local/echo/fast").json() == {"ok": True}


def test_a_caller_hanging_up_mid_tunnel_closes_the_other_side(harness: GatewayHarness, echo: EchoServer) -> None:
    url = harness.serve([app_config("echo")])
    port = int(url.rsplit(":", 1)[1])
    assert harness.gateway is not None
    connections = harness.gateway.server.server_state.connections
    baseline = len(connections)
    sock, head = _connect(port, f"127.0.0.1:{echo.port}")
    assert head.startswith(b"HTTP/1.1 200 ")
    sock.sendall(b"ping")
    assert sock.recv(4) == b"ping"
    wait_for(lambda: len(connections) == baseline + 1)  # the tunnel is tracked (graceful shutdown closes it)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # reset on close
    sock.close()
    assert echo.closed.wait(10)
    wait_for(lambda: len(connections) == baseline)
    assert httpx.get(url + "/local/echo/fast").json() == {"ok": True}
