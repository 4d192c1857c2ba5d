"""The floor for a Python gateway: the least a proxy can do per request, for bench/gateway_throughput.py.

    python bench/floor_proxy.py PORT ALIAS=RUNNER_PORT [...]

uvloop and httptools, one kept-alive runner connection per request in flight, ``/local/{alias}/{path}``
routed to the alias's runner, ``x-fal-request-id`` added both ways. No auth, no leases or scaling,
no events, no timeouts, no streaming, no error answers: not a gateway, only a measure of what
any Python gateway costs at the least (``--http floor`` in gateway_throughput.py serves this instead).
"""

from __future__ import annotations

import asyncio
import os
import sys

import httptools
import uvloop

_HOP = (b"connection", b"transfer-encoding", b"keep-alive", b"content-length", b"host")


class Upstream(asyncio.Protocol):
    def __init__(self, key: tuple[str, int], idle: dict[tuple[str, int], list[Upstream]]) -> None:
        self.key = key
        self.idle = idle
        self.parser = httptools.HttpResponseParser(self)
        self.client: Downstream | None = None
        self.transport: asyncio.Transport | None = None
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_message_begin(self) -> None:
        self.headers, self.body = [], []

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        client, self.client = self.client, None
        if client is None:
            return
        body = b"".join(self.body)
        lines = [b"HTTP/1.1 %d OK\r\n" % self.parser.get_status_code()]
        lines += [name + b": " + value + b"\r\n" for name, value in self.headers if name not in _HOP]
        lines.append(b"x-fal-request-id: %s\r\ncontent-length: %d\r\n\r\n" % (client.request_id, len(body)))
        if client.transport is not None and not client.transport.is_closing():
            client.transport.write(b"".join(lines) + body)
        self.idle.setdefault(self.key, []).append(self)

    def connection_lost(self, exc: Exception | None) -> None:
        idle = self.idle.get(self.key, [])
        if self in idle:
            idle.remove(self)


class Downstream(asyncio.Protocol):
    def __init__(self, routes: dict[bytes, int], idle: dict[tuple[str, int], list[Upstream]]) -> None:
        self.routes = routes
        self.idle = idle
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.request_id = b""
        self.connecting: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_message_begin(self) -> None:
        self.url, self.headers, self.body = b"", [], []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        _, alias, rest = [*self.url.split(b"/", 3), b"", b""][1:4]
        port = self.routes[alias]
        self.request_id = os.urandom(16).hex().encode()
        body = b"".join(self.body)
        lines = [self.parser.get_method() + b" /" + rest + b" HTTP/1.1\r\nhost: 127.0.0.1\r\n"]
        lines += [name + b": " + value + b"\r\n" for name, value in self.headers if name not in _HOP]
        lines.append(b"x-fal-request-id: %s\r\ncontent-length: %d\r\n\r\n" % (self.request_id, len(body)))
        request = b"".join(lines) + body
        idle = self.idle.get(("127.0.0.1", port))
        if idle:
            upstream = idle.pop()
            upstream.client = self
            assert upstream.transport is not None
            upstream.transport.write(request)
        else:
            self.connecting = asyncio.ensure_future(self._connect(port, request))

    async def _connect(self, port: int, request: bytes) -> None:
        key = ("127.0.0.1", port)
        loop = asyncio.get_running_loop()
        transport, upstream = await loop.create_connection(lambda: Upstream(key, self.idle), *key)
        upstream.client = self
        transport.write(request)  # type: ignore[attr-defined]


async def serve(port: int, routes: dict[bytes, int]) -> None:
    idle: dict[tuple[str, int], list[Upstream]] = {}
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Downstream(routes, idle), "127.0.0.1", port)
    async with server:
        await server.serve_forever()


def main() -> None:
    port, *pairs = sys.argv[1:]
    routes = {alias.encode(): int(p) for alias, _, p in (pair.partition("=") for pair in pairs)}
    uvloop.run(serve(int(port), routes))


if __name__ == "__main__":
    main()
