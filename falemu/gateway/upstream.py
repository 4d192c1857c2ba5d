"""A lean HTTP/1.1 client for the gateway's hop to runners.

The gateway forwards every request to a runner on loopback, so the hop must cost little: one
``asyncio.Protocol`` per kept-alive connection, a small parser for the response head, and body
framing by ``Content-Length``, ``chunked`` or connection close. Bodies stream both ways: the request
body can be an async iterator, and the response body is handed out chunk by chunk as it arrives, with
read back-pressure when the consumer is slower than the runner.

Errors carry fal's error types (``runner_connection_refused``, ``runner_disconnected``, ...), so the
gateway can answer with the platform error fal would give.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterable, AsyncIterator
from typing import Protocol, cast

from falemu.runtime.addresses import holds

Headers = list[tuple[bytes, bytes]]

_READ_HIGH_WATER = 1 << 20  # pause reading from the runner above this many buffered bytes
_READ_LOW_WATER = 1 << 16
_MAX_HEAD = 1 << 16  # largest response head accepted


class UpstreamError(Exception):
    """The runner could not be reached or broke the exchange; ``error_type`` is fal's name for it."""

    def __init__(self, message: str, error_type: str, *, response_started: bool = False) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.response_started = response_started


class Sink(Protocol):
    """Receives one exchange's response as callbacks (the gateway's fast path), instead of awaiting it.

    A response that arrives whole (head and ``Content-Length`` body, or no body) comes as one
    ``upstream_response``; any other as ``upstream_head``, ``upstream_body`` parts and ``upstream_end``.
    ``upstream_error`` ends the exchange early, at any point.
    """

    def upstream_response(self, status: int, headers: Headers, body: bytes) -> None: ...

    def upstream_head(self, status: int, headers: Headers) -> None: ...

    def upstream_body(self, chunk: bytes) -> None: ...

    def upstream_end(self) -> None: ...

    def upstream_error(self, exc: UpstreamError) -> None: ...


class Connection(asyncio.Protocol):
    """One TCP connection to a runner, carrying one exchange at a time.

    The response goes either to futures and a queue that :class:`UpstreamResponse` awaits, or, after
    :meth:`begin_sink`, straight to a :class:`Sink`'s callbacks as the bytes arrive.
    """

    def __init__(self, pool: UpstreamPool, key: tuple[str, int, int]) -> None:
        self.pool = pool
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.reusable = True
        self._loop = asyncio.get_running_loop()
        self._can_write: asyncio.Future[None] | None = None
        self._reset()

    # -- exchange state -------------------------------------------------------------------------
    def _reset(self) -> None:
        self._buf = bytearray()
        self._state = "head"  # head | body-length | body-chunked | body-close | done
        self._remaining = 0
        self._chunk_state = "size"  # size | data | data-crlf | trailer
        self._head_waiter: asyncio.Future[tuple[int, Headers]] | None = None
        self._body: collections.deque[bytes | BaseException | None] = collections.deque()
        self._body_bytes = 0
        self._body_waiter: asyncio.Future[None] | None = None
        self._no_body = False
        self._reading_paused = False
        self._sink: Sink | None = None
        self.got_bytes = False

    def begin(self, no_body: bool) -> asyncio.Future[tuple[int, Headers]]:
        self._reset()
        self._no_body = no_body
        self._head_waiter = self._loop.create_future()
        return self._head_waiter

    def begin_sink(self, sink: Sink, no_body: bool) -> None:
        """Start an exchange whose response goes to ``sink``'s callbacks; the caller writes the request."""
        self._reset()
        self._no_body = no_body
        self._sink = sink

    def _head_failed(self, exc: UpstreamError) -> bool:
        """Hand ``exc`` to whoever waits for the response head; False when the head already came."""
        if self._sink is not None:
            if self._state != "head":
                return False
            sink, self._sink = self._sink, None
            self._state = "done"
            sink.upstream_error(exc)
            return True
        if self._head_waiter is not None and not self._head_waiter.done():
            self._head_waiter.set_exception(exc)
            return True
        return False

    # -- protocol callbacks ---------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses

    def pause_writing(self) -> None:
        if self._can_write is None or self._can_write.done():
            self._can_write = self._loop.create_future()

    def resume_writing(self) -> None:
        if self._can_write is not None and not self._can_write.done():
            self._can_write.set_result(None)

    async def drain(self) -> None:
        if self.closed:
            raise UpstreamError("the runner closed the connection", "runner_disconnected")
        if self._can_write is not None and not self._can_write.done():
            await self._can_write

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.reusable = False
        self.pool._forget(self)
        if self._can_write is not None and not self._can_write.done():
            self._can_write.set_result(None)
        if self._head_failed(UpstreamError("the runner closed the connection before answering", "runner_disconnected")):
            return
        if self._state == "body-close":
            self._state = "done"
            self._push(None)
        elif self._state.startswith("body"):
            self._push(
                UpstreamError(
                    "the runner closed the connection in the middle of its response",
                    "runner_incomplete_response",
                    response_started=True,
                )
            )

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        try:
            self._feed(data)
        except UpstreamError as exc:
            self.reusable = False
            if not self._head_failed(exc):
                self._push(exc)
            if self.transport is not None:
                self.transport.close()

    # -- parsing ----------------------------------------------------------------------------------
    def _feed(self, data: bytes) -> None:
        if self._state == "done":
            # Bytes after a complete response: the runner is not speaking HTTP/1.1 keep-alive properly.
            self.reusable = False
            return
        if self._state == "head":
            if self._buf:
                self._buf += data
                data = bytes(self._buf)
                self._buf = bytearray()
            end = data.find(b"\r\n\r\n")
            # RFC 9112 2.2: a head whose lines end in a bare LF is read too (as nginx and h11 do).
            bare = data.find(b"\n\n", 0, end if end >= 0 else len(data))
            if bare >= 0:
                end = bare
            if end < 0:
                if len(data) > _MAX_HEAD:
                    raise UpstreamError("the runner sent an oversized response head", "runner_incomplete_response")
                self._buf = bytearray(data)
                return
            rest = data[end + (2 if bare >= 0 else 4) :]
            version, status, headers = _parse_head(data[:end], bare >= 0)
            if 100 <= status < 200 and status != 101:
                if rest:  # informational: the real head follows
                    self._feed(rest)
                return
            headers = self._start_body(version, status, headers)
            sink = self._sink
            if sink is not None:
                if self._state == "body-length" and len(rest) >= self._remaining:
                    # The whole response is in: one callback (the common small answer).
                    body = rest[: self._remaining]
                    if len(rest) > self._remaining:
                        self.reusable = False
                    self._remaining = 0
                    self._state = "done"
                    self._sink = None
                    sink.upstream_response(status, headers, body)
                    return
                if self._state == "done":
                    if rest:
                        self.reusable = False
                    self._sink = None
                    sink.upstream_response(status, headers, b"")
                    return
                sink.upstream_head(status, headers)
            else:
                assert self._head_waiter is not None
                if not self._head_waiter.done():
                    self._head_waiter.set_result((status, headers))
            if self._state == "done":
                self._push(None)
                if rest:
                    self.reusable = False
                return
            data = rest
            if not data:
                return
        if self._state == "body-length":
            take = data[: self._remaining]
            if len(data) > self._remaining:
                self.reusable = False
            self._remaining -= len(take)
            if take:
                self._push(take)
            if self._remaining == 0:
                self._state = "done"
                self._push(None)
        elif self._state == "body-close":
            self._push(data)
        elif self._state == "body-chunked":
            self._feed_chunked(data)

    def _start_body(self, version: bytes, status: int, headers: Headers) -> Headers:
        """Set up the body's framing; returns the headers to pass on (without a length that does not hold)."""
        connection = b""
        length: int | None = None
        lengths = 0
        chunked = False
        for name, value in headers:
            if name == b"content-length":
                lengths += 1
                length = _content_length(value, length)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"connection":
                connection = value.lower()
        if b"close" in connection or status >= 500 or (version == b"HTTP/1.0" and b"keep-alive" not in connection):
            # After an app's unhandled exception, uvicorn (FastAPI's usual server) answers 500 and then
            # closes the connection without saying so: reusing it would fail the next request. An HTTP/1.0
            # answer closes its connection unless it says keep-alive (http.server's default).
            self.reusable = False
        bodyless = self._no_body or status in (204, 304) or status == 101
        if lengths and (lengths > 1 or chunked or (bodyless and not self._no_body)):
            # RFC 9112 6.3: Transfer-Encoding overrides Content-Length, which a proxy removes; 204 has no
            # length (RFC 9110 8.6) and a 304's describes a body that is not sent, which nginx passes on
            # but uvicorn (the gateway's other path) cannot: both drop it. Equal duplicates become one.
            headers = [(name, value) for name, value in headers if name != b"content-length"]
            if not chunked and not bodyless and length is not None:
                headers.append((b"content-length", b"%d" % length))
        if bodyless:
            self._state = "done"
            if status == 101:
                self.reusable = False
        elif chunked:
            self._state = "body-chunked"
            self._chunk_state = "size"
        elif length is not None:
            self._remaining = length
            self._state = "body-length" if length else "done"
        else:
            self._state = "body-close"
            self.reusable = False
        return headers

    def _feed_chunked(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        pos = 0
        out: list[bytes] = []
        while True:
            if self._chunk_state == "size":
                end = buf.find(b"\r\n", pos)
                if end < 0:
                    break
                size_text = bytes(buf[pos:end]).split(b";", 1)[0].strip()
                try:
                    size = int(size_text, 16)
                except ValueError:
                    raise UpstreamError("the runner sent a bad chunk size", "runner_incomplete_response") from None
                pos = end + 2
                if size == 0:
                    self._chunk_state = "trailer"
                else:
                    self._remaining = size
                    self._chunk_state = "data"
            elif self._chunk_state == "data":
                available = len(buf) - pos
                if available <= 0:
                    break
                take = min(available, self._remaining)
                out.append(bytes(buf[pos : pos + take]))
                pos += take
                self._remaining -= take
                if self._remaining == 0:
                    self._chunk_state = "data-crlf"
            elif self._chunk_state == "data-crlf":
                if len(buf) - pos < 2:
                    break
                pos += 2
                self._chunk_state = "size"
            else:  # trailer: lines until an empty one
                end = buf.find(b"\r\n", pos)
                if end < 0:
                    break
                line = buf[pos:end]
                pos = end + 2
                if not line:
                    self._state = "done"
                    if pos < len(buf):
                        self.reusable = False
                    break
        del buf[:pos]
        if out:
            self._push(b"".join(out))
        if self._state == "done":
            self._buf = bytearray()
            self._push(None)

    # -- body queue -------------------------------------------------------------------------------
    def _push(self, item: bytes | BaseException | None) -> None:
        sink = self._sink
        if sink is not None:
            if item is None:
                self._sink = None
                sink.upstream_end()
            elif isinstance(item, UpstreamError):
                self._sink = None
                sink.upstream_error(item)
            elif isinstance(item, bytes):
                sink.upstream_body(item)
            return
        self._body.append(item)
        if isinstance(item, bytes):
            self._body_bytes += len(item)
            if self._body_bytes > _READ_HIGH_WATER and not self._reading_paused and self.transport is not None:
                self._reading_paused = True
                self.transport.pause_reading()
        waiter = self._body_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def next_chunk(self) -> bytes | None:
        while not self._body:
            self._body_waiter = self._loop.create_future()
            await self._body_waiter
            self._body_waiter = None
        item = self._body.popleft()
        if isinstance(item, BaseException):
            raise item
        if item is not None:
            self._body_bytes -= len(item)
            if self._reading_paused and self._body_bytes < _READ_LOW_WATER and self.transport is not None:
                self._reading_paused = False
                self.transport.resume_reading()
        return item

    @property
    def response_done(self) -> bool:
        return self._state == "done"

    def close(self) -> None:
        self.reusable = False
        if self.transport is not None and not self.closed:
            self.transport.close()


BODYLESS_METHODS = frozenset({"GET", "HEAD", "DELETE", "OPTIONS"})
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})  # RFC 9110, 9.2.2
_IDEMPOTENCY_KEYS = (b"idempotency-key", b"x-idempotency-key")


def replayable(method: str, headers: Headers) -> bool:
    """Whether a request may be sent again when a reused runner connection dies before any byte of the
    answer. The runner may have closed the idle connection just as it was reused (the request never
    ran), or it may have read the request and crashed: only a request that is safe to run twice goes
    out again, that is an idempotent method or one with an ``Idempotency-Key`` (nginx and Go's HTTP
    client decide the same way). Any other gets 503 ``runner_disconnected``."""
    return method in IDEMPOTENT_METHODS or any(name in _IDEMPOTENCY_KEYS for name, _ in headers)


def body_length(method: str, body: bytes | bytearray) -> int | None:
    """The Content-Length to send with a whole body: none for an empty body of a method that has none."""
    return len(body) if body or method not in BODYLESS_METHODS else None


def request_head(
    host: str, port: int, method: str, target: bytes, headers: Headers, length: int | None, *, chunked: bool = False
) -> bytes:
    """A request head for a runner; ``length`` is the body's size (None: no Content-Length), ``chunked``
    announces a chunked body instead."""
    lines = [b"%s %s HTTP/1.1\r\nhost: %s:%d\r\n" % (method.encode("ascii"), target, host.encode(), port)]
    for name, value in headers:
        lines.append(b"%s: %s\r\n" % (name, value))
    if chunked:
        lines.append(b"transfer-encoding: chunked\r\n")
    elif length is not None:
        lines.append(b"content-length: %d\r\n" % length)
    lines.append(b"\r\n")
    return b"".join(lines)


def _parse_head(head: bytes, bare_lf: bool = False) -> tuple[bytes, int, Headers]:
    lines = [line.rstrip(b"\r") for line in head.split(b"\n")] if bare_lf else head.split(b"\r\n")
    status_line = lines[0].split(b" ", 2)
    if len(status_line) < 2 or not status_line[0].startswith(b"HTTP/1."):
        raise UpstreamError("the runner did not answer with HTTP/1.x", "runner_incomplete_response")
    code = status_line[1]
    # Three digits (RFC 9110 15), in the range a response can have: the caller's side of the gateway
    # (and any HTTP client) has no status line for 600 and above.
    if len(code) != 3 or not code.isdigit() or not b"100" <= code <= b"599":
        raise UpstreamError(f"the runner sent a bad status line: {lines[0][:80]!r}", "runner_incomplete_response")
    headers: Headers = []
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep:
            continue
        headers.append((name.strip().lower(), value.strip()))
    return status_line[0], int(code), headers


def _content_length(value: bytes, seen: int | None) -> int:
    """The length a Content-Length value gives (``5`` or ``5, 5``), the same as ``seen`` if one came before."""
    length = seen
    for part in value.split(b","):
        part = part.strip()
        if not part.isdigit() or (length is not None and int(part) != length):
            raise UpstreamError(
                "the runner sent an invalid or conflicting Content-Length", "runner_incomplete_response"
            )
        length = int(part)
    assert length is not None
    return length


class UpstreamResponse:
    """A runner's response: status and headers now, the body as it arrives."""

    def __init__(self, conn: Connection, status: int, headers: Headers, pool: UpstreamPool) -> None:
        self._conn = conn
        self.status = status
        self.headers = headers
        self._pool = pool
        self._finished = False

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None

    async def next_chunk(self) -> bytes | None:
        """The next part of the body as it arrives; ``None`` at its end."""
        chunk = await self._conn.next_chunk()
        if chunk is None:
            self._finished = True
        return chunk

    def at_end(self) -> bool:
        """Whether the body is complete and every part of it was taken (only its end is left)."""
        body = self._conn._body
        return len(body) == 1 and body[0] is None

    async def iter_body(self) -> AsyncIterator[bytes]:
        while (chunk := await self.next_chunk()) is not None:
            yield chunk

    async def read(self) -> bytes:
        parts = [chunk async for chunk in self.iter_body()]
        return b"".join(parts)

    def abort(self) -> None:
        """Stop the exchange now: the body iterator raises and the connection is not reused."""
        self._conn.close()

    def release(self) -> None:
        """Hand the connection back for reuse if the exchange ended cleanly, else close it."""
        conn = self._conn
        if self._finished and conn.response_done and conn.reusable and not conn.closed:
            self._pool._put_back(conn)
        else:
            conn.close()


class UpstreamPool:
    """Kept-alive connections to runners, keyed by (host, port, holder): a runner's connections are never
    another runner's, even one that holds the same address later."""

    def __init__(self, *, max_idle_per_host: int = 256, connect_timeout: float = 10.0) -> None:
        self._idle: dict[tuple[str, int, int], list[Connection]] = {}
        self._all: set[Connection] = set()
        self.max_idle_per_host = max_idle_per_host
        self.connect_timeout = connect_timeout

    def _forget(self, conn: Connection) -> None:
        self._all.discard(conn)
        idle = self._idle.get(conn.key)
        if idle and conn in idle:
            idle.remove(conn)

    def _put_back(self, conn: Connection) -> None:
        idle = self._idle.setdefault(conn.key, [])
        if len(idle) >= self.max_idle_per_host:
            conn.close()
            return
        idle.append(conn)

    async def connect(self, host: str, port: int, holder: int = 0) -> Connection:
        """A new connection to ``host:port`` for the runner whose process is ``holder`` (see
        :mod:`falemu.runtime.addresses`); raises :class:`UpstreamError` with fal's error type."""
        loop = asyncio.get_running_loop()
        key = (host, port, holder)
        if not holds(host, port, holder):  # the runner's container is gone; its address may be another's now
            raise UpstreamError(f"the runner at {host}:{port} is gone", "runner_connection_refused")
        try:
            async with asyncio.timeout(self.connect_timeout):
                transport, conn = await loop.create_connection(lambda: Connection(self, key), host, port)
            if conn.transport is None:  # some loops call connection_made later
                conn.connection_made(transport)
        except TimeoutError:
            message, error_type = f"connecting to the runner at {host}:{port} timed out", "runner_connection_timeout"
        except ConnectionRefusedError:
            message, error_type = f"the runner at {host}:{port} refused the connection", "runner_connection_refused"
        except OSError as exc:
            message, error_type = f"cannot connect to the runner at {host}:{port}: {exc}", "runner_connection_error"
        else:
            self._all.add(conn)
            return conn
        raise UpstreamError(message, error_type)

    def reuse(self, conn: Connection) -> None:
        """After a sink exchange: keep ``conn`` for the next request if it ended cleanly, else close it."""
        if conn.response_done and conn.reusable and not conn.closed:
            self._put_back(conn)
        else:
            conn.close()

    def take_idle(self, host: str, port: int, holder: int = 0) -> Connection | None:
        """A kept-alive connection to ``host:port`` (of the runner ``holder``) that is free, if there is one."""
        idle = self._idle.get((host, port, holder))
        while idle:
            conn = idle.pop()
            transport = conn.transport
            if (
                conn.reusable
                and not conn.closed
                and transport is not None
                and not transport.is_closing()
                and transport.is_reading()
            ):
                return conn
            conn.close()
        return None

    async def request(
        self,
        host: str,
        port: int,
        method: str,
        target: bytes,
        headers: Headers,
        body: bytes | AsyncIterable[bytes] = b"",
        *,
        content_length: int | None = None,
        holder: int = 0,
    ) -> UpstreamResponse:
        """Send one request (to the runner whose process is ``holder``) and return once the head is in.

        ``headers`` must not carry ``host``, ``content-length``, ``transfer-encoding`` or ``connection``:
        the framing is decided here. A streamed body without ``content_length`` goes out chunked.
        """
        streamed = not isinstance(body, bytes | bytearray)
        if streamed:
            length = content_length
        else:
            assert isinstance(body, bytes | bytearray)
            length = body_length(method, body)
        head = request_head(host, port, method, target, headers, length, chunked=streamed and content_length is None)
        no_body = method == "HEAD"

        for attempt in (0, 1):
            conn = self.take_idle(host, port, holder)
            fresh = conn is None
            if conn is None:
                conn = await self.connect(host, port, holder)
            waiter = conn.begin(no_body)
            transport = conn.transport
            assert transport is not None
            if not streamed:
                assert isinstance(body, bytes | bytearray)
                transport.write(head + bytes(body) if body else head)
                try:
                    status, resp_headers = await waiter
                except UpstreamError:
                    conn.close()
                    # A kept-alive connection the runner had already closed: try once on a new one.
                    if not fresh and attempt == 0 and not conn.got_bytes and replayable(method, headers):
                        continue
                    raise
                except BaseException:
                    conn.close()
                    raise
                return UpstreamResponse(conn, status, resp_headers, self)
            transport.write(head)
            sender = asyncio.ensure_future(self._send_body(conn, body, chunked=content_length is None))  # type: ignore[arg-type]
            try:
                status, resp_headers = await waiter
            except BaseException:
                sender.cancel()
                conn.close()
                raise
            if not sender.done():
                # The runner answered before reading the whole body; the connection cannot be reused.
                conn.reusable = False
            return UpstreamResponse(conn, status, resp_headers, self)
        raise UpstreamError("the runner closed the connection before answering", "runner_disconnected")

    @staticmethod
    async def _send_body(conn: Connection, body: AsyncIterable[bytes], *, chunked: bool) -> None:
        transport = conn.transport
        assert transport is not None
        try:
            async for chunk in body:
                if conn.closed:
                    return
                if not chunk:
                    continue
                if chunked:
                    transport.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                else:
                    transport.write(chunk)
                await conn.drain()
            if chunked and not conn.closed:
                transport.write(b"0\r\n\r\n")
        except UpstreamError:
            return
        except Exception:
            # The caller went away mid-body: the runner must not take a truncated body as complete.
            conn.close()

    async def aclose(self) -> None:
        for conn in list(self._all):
            conn.close()
        self._all.clear()
        self._idle.clear()
