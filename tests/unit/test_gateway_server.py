"""The gateway's HTTP protocol: writes of one loop step leave as one, nothing is held past the step."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import httpx

from falemu.gateway.probe import Probe
from falemu.gateway.serve import ThreadedServer
from falemu.gateway.server import GatewayHttpProtocol, _CorkedTransport, gateway_server_options
from falemu.gateway.tls import server_ssl_files


class RecordingTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_write_buffer_size(self) -> int:
        return 0


def corked() -> tuple[_CorkedTransport, RecordingTransport]:
    raw = RecordingTransport()
    return _CorkedTransport(raw, asyncio.get_running_loop()), raw  # type: ignore[arg-type]


def test_writes_of_one_step_leave_as_one() -> None:
    async def main() -> None:
        transport, raw = corked()
        transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
        transport.write(b"ok")
        assert raw.writes == []
        await asyncio.sleep(0)
        assert raw.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"]

    asyncio.run(main())


def test_a_lone_head_is_sent_at_the_end_of_the_step_not_held_for_the_body() -> None:
    async def main() -> None:
        transport, raw = corked()
        transport.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        await asyncio.sleep(0)
        assert raw.writes == [b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"]
        transport.write(b"5\r\nhello\r\n")
        await asyncio.sleep(0)
        assert raw.writes[1:] == [b"5\r\nhello\r\n"]

    asyncio.run(main())


def test_large_writes_go_out_at_once_after_what_was_collected() -> None:
    async def main() -> None:
        transport, raw = corked()
        big = b"x" * (1 << 20)
        transport.write(b"head")
        transport.write(big)
        assert raw.writes == [b"head", big]
        await asyncio.sleep(0)
        assert raw.writes == [b"head", big]

    asyncio.run(main())


def test_close_sends_what_was_collected_first() -> None:
    async def main() -> None:
        transport, raw = corked()
        transport.write(b"bye")
        transport.close()
        assert raw.writes == [b"bye"]
        assert raw.closed

    asyncio.run(main())


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"5")]})
    await send({"type": "http.response.body", "body": b"hello"})


def test_served_response_arrives_whole_and_keep_alive_works() -> None:
    options = gateway_server_options()
    assert options["http"] is GatewayHttpProtocol
    with ThreadedServer(_app, **options) as server, socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.settimeout(10)
        for _ in range(3):  # the same connection serves request after request
            sock.sendall(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            data = b""
            while not data.endswith(b"hello"):
                chunk = sock.recv(65536)
                assert chunk, "the server closed the connection"
                data += chunk
            assert data.startswith(b"HTTP/1.1 200 OK\r\n")
            assert data.count(b"HTTP/1.1") == 1


def test_tls_and_streaming_through_the_gateway_protocol(tmp_path: Path) -> None:
    certfile, keyfile, ca = server_ssl_files(tmp_path)
    options = {**gateway_server_options(), "ssl_certfile": certfile, "ssl_keyfile": keyfile}
    with ThreadedServer(Probe("tls"), **options) as server, httpx.Client(verify=ca) as client:
        assert client.get(server.url + "/fast").json() == {"ok": True}
        with client.stream("POST", server.url + "/stream?n=3", json={}) as resp:
            events = [line for line in resp.iter_lines() if line.startswith("data:")]
        assert len(events) == 3
