"""The gateway's HTTP/1.1 client to runners, against a raw TCP server that answers crafted bytes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from falemu.gateway.upstream import UpstreamError, UpstreamPool

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    body = b""
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            body = await reader.readexactly(int(line.split(b":")[1]))
        if line.lower().startswith(b"transfer-encoding: chunked"):
            while True:
                size = int((await reader.readuntil(b"\r\n")).strip(), 16)
                chunk = await reader.readexactly(size + 2)
                if size == 0:
                    break
                body += chunk[:-2]
    return head, body


async def serve(handler: Handler) -> tuple[asyncio.Server, int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def run(coro: Awaitable[None]) -> None:
    async def bounded() -> None:
        await asyncio.wait_for(coro, 20)

    asyncio.run(bounded())


def test_chunked_body_split_across_packets_and_keep_alive_reuse() -> None:
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        while True:
            try:
                await read_request(reader)
            except asyncio.IncompleteReadError:
                return
            parts = [
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n",
                b"5\r\nhel",
                b"lo\r\n",
                b"6;ext=1\r\n world\r\n0\r\n",
                b"\r\n",
            ]
            for part in parts:
                writer.write(part)
                await writer.drain()
                await asyncio.sleep(0.01)

    async def main() -> None:
        server, port = await serve(handler)
        pool = UpstreamPool()
        for _ in range(3):
            resp = await pool.request("127.0.0.1", port, "GET", b"/", [])
            assert resp.status == 200
            assert resp.header(b"x-a") == b"1"
            assert await resp.read() == b"hello world"
            resp.release()
        assert connections == 1
        await pool.aclose()
        server.close()

    run(main())


def test_content_length_body_and_request_body_framing() -> None:
    seen: list[tuple[bytes, bytes]] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                seen.append(await read_request(reader))
            except asyncio.IncompleteReadError:
                return
            writer.write(b"HTTP/1.1 201 Created\r\nContent-Length: 3\r\n\r\nabc")
            await writer.drain()

    async def main() -> None:
        server, port = await serve(handler)
        pool = UpstreamPool()
        resp = await pool.request("127.0.0.1", port, "POST", b"/x?y=1", [(b"x-k", b"v")], b"payload")
        assert (resp.status, await resp.read()) == (201, b"abc")
        resp.release()

        async def chunks() -> AsyncIterator[bytes]:
            yield b"one,"
            yield b"two"

        resp = await pool.request("127.0.0.1", port, "POST", b"/s", [], chunks())
        assert await resp.read() == b"abc"
        resp.release()
        await pool.aclose()
        server.close()

    run(main())
    head, body = seen[0]
    assert head.startswith(b"POST /x?y=1 HTTP/1.1\r\n")
    assert b"x-k: v\r\n" in head
    assert b"content-length: 7\r\n" in head
    assert body == b"payload"
    head, body = seen[1]
    assert b"transfer-encoding: chunked" in head
    assert body == b"one,two"


def test_close_delimited_body_informational_head_and_no_reuse() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil ")
        await writer.drain()
        writer.write(b"close")
        writer.close()

    async def main() -> None:
        server, port = await serve(handler)
        pool = UpstreamPool()
        resp = await pool.request("127.0.0.1", port, "GET", b"/", [])
        assert resp.status == 200
        assert await resp.read() == b"until close"
        resp.release()
        assert not pool._idle.get(("127.0.0.1", port))
        await pool.aclose()
        server.close()

    run(main())


def test_head_and_204_have_no_body() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                head, _ = await read_request(reader)
            except asyncio.IncompleteReadError:
                return
            if head.startswith(b"HEAD"):
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
            else:
                writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
            await writer.drain()

    async def main() -> None:
        server, port = await serve(handler)
        pool = UpstreamPool()
        for method in ("HEAD", "DELETE", "HEAD"):
            resp = await pool.request("127.0.0.1", port, method, b"/", [])
            assert await resp.read() == b""
            resp.release()
        await pool.aclose()
        server.close()

    run(main())


def test_errors_carry_fal_error_types() -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.close()

    async def cut_short(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly a bit")
        await writer.drain()
        writer.close()

    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"SSH-2.0-OpenSSH\r\n\r\n")
        await writer.drain()

    async def main() -> None:
        pool = UpstreamPool()
        server, port = await serve(hang_up)
        with pytest.raises(UpstreamError) as info:
            await pool.request("127.0.0.1", port, "GET", b"/", [])
        assert info.value.error_type == "runner_disconnected"
        server.close()

        server, port = await serve(cut_short)
        resp = await pool.request("127.0.0.1", port, "GET", b"/", [])
        with pytest.raises(UpstreamError) as info:
            await resp.read()
        assert info.value.error_type == "runner_incomplete_response"
        resp.release()
        server.close()

        server, port = await serve(garbage)
        with pytest.raises(UpstreamError) as info:
            await pool.request("127.0.0.1", port, "GET", b"/", [])
        assert info.value.error_type == "runner_incomplete_response"
        server.close()

        await server.wait_closed()
        with pytest.raises(UpstreamError) as info:
            await pool.request("127.0.0.1", port, "GET", b"/", [])
        assert info.value.error_type == "runner_connection_refused"
        await pool.aclose()

    run(main())


def test_a_kept_alive_connection_the_runner_closed_is_retried_on_a_new_one() -> None:
    served = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal served
        await read_request(reader)
        served += 1
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.close()  # an idle timeout on the runner's side, without "Connection: close"

    async def main() -> None:
        server, port = await serve(handler)
        pool = UpstreamPool()
        resp = await pool.request("127.0.0.1", port, "GET", b"/", [])
        assert await resp.read() == b"ok"
        resp.release()
        await asyncio.sleep(0.2)
        resp = await pool.request("127.0.0.1", port, "GET", b"/", [])
        assert await resp.read() == b"ok"
        resp.release()
        assert served == 2
        await pool.aclose()
        server.close()

    run(main())
