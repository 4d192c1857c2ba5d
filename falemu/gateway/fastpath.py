"""The sync API's fast path: a request forwarded by callbacks, with no ASGI task or message per step.

Most sync requests are small: a head, perhaps a body that arrives with it, and a runner with a free
slot. For those, the gateway's HTTP protocol (:class:`falemu.gateway.server.GatewayHttpProtocol`) asks
:func:`begin` for a :class:`FastExchange` as soon as the request head is parsed. The exchange leases the
runner, writes the request to a kept-alive runner connection once the body is in, and writes the
runner's response to the caller as its bytes arrive (streamed answers such as SSE included, with
back-pressure both ways). It saves the ASGI task, the per-message dicts, the futures and the timeout
context of :meth:`falemu.gateway.app.Gateway._sync`: about half the gateway's CPU per request.

:func:`begin` returns None, and the request takes the ASGI path, whenever anything is out of the
ordinary: queue and internal routes, unknown apps, a key that does not check out, a bad
``X-Fal-Request-Timeout``, a chunked or large request body, ``Expect: 100-continue``, HTTP/1.0 or a
percent-encoded path. The ASGI path handles every case, and both give the same answers: the gateway's
tests run against each.

As on the ASGI path (:mod:`falemu.gateway.body`), the runner is leased only once the whole body is in:
a caller that stalls or hangs up during its upload never holds or costs a runner. When no runner is
free then, the exchange waits for one (``X-Fal-Request-Timeout``, ``request_start_timeout``) unless the
caller hangs up first. The body's time limit is kept by the connection's timer
(:meth:`FastExchange.body_timed_out`).
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Protocol

from uvicorn.protocols.http.httptools_impl import STATUS_LINE

from falemu.events import RequestCompleted, RequestStarted
from falemu.gateway.apps import GatewayApp
from falemu.gateway.asgi import acquire, new_request_id, start_timeout
from falemu.gateway.body import body_timeout_error
from falemu.gateway.errors import PlatformError, request_timeout_error
from falemu.gateway.headers import Incoming, identity_headers, response_headers, runner_hints, split_headers
from falemu.gateway.upstream import Connection, Headers, UpstreamError, body_length, replayable, request_head
from falemu.scaling.pool import Lease, Outcome

if TYPE_CHECKING:
    from falemu.gateway.app import Gateway

MAX_BODY = 256 * 1024  # larger request bodies take the ASGI path (spooled to a file past 1 MiB)
_CHUNKED = (b"transfer-encoding", b"chunked")
_CLOSE = (b"connection", b"close")
_NO_HEADERS: Headers = []


class Downstream(Protocol):
    """What an exchange needs of the caller's connection (the gateway's HTTP protocol provides it)."""

    @property
    def transport(self) -> asyncio.Transport: ...

    @property
    def default_headers(self) -> Headers: ...

    @property
    def write_paused(self) -> bool:
        """The caller's connection has more unsent bytes than its high-water mark."""

    def send_now(self, data: bytes) -> None:
        """Write ``data`` to the caller at once, after anything written before it."""

    def time_limit(self, seconds: float) -> None:
        """Call the exchange in progress's ``timed_out()`` in ``seconds`` unless it is done by then."""

    def exchange_done(self, exchange: FastExchange) -> None:
        """The answer is complete (or the caller gone): the connection may take its next request."""


def begin(
    gateway: Gateway, downstream: Downstream, method: bytes, url: bytes, raw_headers: Headers, keep_alive: bool
) -> FastExchange | None:
    """An exchange for this request when it can take the fast path, else None (nothing was changed)."""
    if url[:1] != b"/" or url[:6] == b"/queue" or b"#" in url:
        return None
    raw_path, _, query = url.partition(b"?")
    if b"%" in raw_path:  # routed by its decoded form: the ASGI path decodes it as uvicorn does
        return None
    try:
        path = raw_path.decode("ascii")
    except UnicodeDecodeError:
        return None
    owner, _, rest = path[1:].partition("/")
    alias, _, sub = rest.partition("/")
    gapp = gateway.apps.get(alias) if owner == gateway.owner else None
    if gapp is None or not alias:
        return None
    if gateway.faults is not None and gateway.faults.intercepts(alias):
        return None  # falemu.chaos: the ASGI path applies request faults
    incoming = split_headers(raw_headers)
    if incoming.chunked or (incoming.content_length or 0) > MAX_BODY:
        return None
    if incoming.host is not None and incoming.host[:6].lower() == "queue.":
        return None
    if gateway.host_mounts and gateway.host_mounted(incoming.host) is not None:
        return None  # another ASGI app serves this host (Gateway.mount_host)
    try:
        caller = gateway.authorize(gapp, incoming)
        if incoming.request_timeout:
            start_timeout(incoming.request_timeout, gapp)  # validated now; it bounds the wait for a runner
    except PlatformError:
        return None
    request_id = new_request_id()
    target = b"/" + raw_path[1:].partition(b"/")[2].partition(b"/")[2]
    if query:
        target += b"?" + query
    user = caller.user if caller is not None else None
    gateway.fast_requests += 1
    return FastExchange(
        gateway, downstream, gapp, request_id, method.decode("ascii"), target, f"{owner}/{alias}/{sub}",
        incoming, user, keep_alive, "/" + sub,
    )  # fmt: skip


class FastExchange:
    """One sync request on the fast path, from its head to the last byte of the answer.

    It stands in for uvicorn's request cycle on the caller's connection, so it has the attributes
    uvicorn's protocol reads there (``response_complete``, ``keep_alive``).
    """

    def __init__(
        self,
        gateway: Gateway,
        downstream: Downstream,
        gapp: GatewayApp,
        request_id: str,
        method: str,
        target: bytes,
        endpoint: str,
        incoming: Incoming,
        user: str | None,
        keep_alive: bool,
        path: str = "/",
    ) -> None:
        self.gateway = gateway
        self.downstream = downstream
        self.gapp = gapp
        self.lease: Lease | None = None  # taken once the whole body is in
        self.awaiting_body = True
        self.request_id = request_id
        self.method = method
        self.target = target
        self.endpoint = endpoint
        self.incoming = incoming
        self.user = user
        self.keep_alive = keep_alive
        self.response_complete = False
        self.status = 0
        self.error_type: str | None = None
        self.path = path  # the endpoint after /{owner}/{app}, for the request history
        self.outcome: Outcome = "ok"
        self._body: list[bytes] = []
        self._request: bytes = b""
        self._conn: Connection | None = None
        self._connecting: asyncio.Future[None] | None = None
        self._waiting: asyncio.Future[None] | None = None  # waiting for a runner
        self._retried = False
        self._started = False  # the response head went to the caller
        self._chunked = False
        self._runner_paused = False  # reading the runner is paused: the caller is behind
        self._began = 0.0  # when the runner was leased
        self._waited = 0.0  # seconds spent waiting for a runner once the body was in

    # -- the caller's side (called by the gateway's HTTP protocol) -----------------------------------------------
    def request_body(self, chunk: bytes) -> None:
        self._body.append(chunk)

    def request_complete(self) -> None:
        """The whole request is in: lease a runner and send it."""
        self.awaiting_body = False
        lease = self.gapp.pool.try_acquire(self.request_id, self.incoming.runner_hint)
        if lease is None:
            self._waiting = asyncio.ensure_future(self._wait_for_runner())
        else:
            self._start(lease)

    async def _wait_for_runner(self) -> None:
        incoming = self.incoming
        since = time.monotonic()
        try:
            wait = start_timeout(incoming.request_timeout, self.gapp)
            lease = await acquire(self.gapp, self.request_id, wait, incoming.runner_hint)
        except PlatformError as exc:
            self._waited = time.monotonic() - since
            if not self.response_complete:
                self._answer_error(exc)
            return
        self._waiting = None
        self._waited = time.monotonic() - since
        if self.response_complete:  # cannot happen (client_lost cancels the wait): never keep a runner
            self.gapp.pool.release_nowait(lease, "ok")
            return
        self._start(lease)

    def _start(self, lease: Lease) -> None:
        self.lease = lease
        runner = lease.runner
        self._began = time.monotonic()
        alias = self.gapp.config.alias
        self.gateway.emit(
            RequestStarted(
                alias,
                request_id=self.request_id,
                runner=runner.id,
                endpoint=self.path,
                method=self.method,
                queue_wait=self._waited,
            )
        )
        body = b"".join(self._body) if self._body else b""
        self._body = []
        recorder = self.gateway.recorder
        if recorder is not None:
            recorder.request_body(self.request_id, self.incoming.forward, body, self.incoming.store_io)
        headers = identity_headers(self.request_id, self.endpoint, self.user)
        headers += self.incoming.forward
        length = body_length(self.method, body)
        self._request = request_head(runner.host, runner.port, self.method, self.target, headers, length) + body
        if self.gapp.config.scaling.request_timeout:
            self.downstream.time_limit(float(self.gapp.config.scaling.request_timeout))
        self._send()

    def client_lost(self) -> None:
        """The caller's connection closed before the answer was complete."""
        if self.response_complete:
            return
        self.status = 499
        self.error_type = "client_disconnected"
        if self.lease is None:  # it had no runner yet: nothing was sent anywhere
            waiting, self._waiting = self._waiting, None
            if waiting is not None:
                waiting.cancel()  # the pool gives back a lease granted in the same instant
            self._finish(close=False)
            return
        if self.outcome == "ok":
            self.outcome = "error"
        self._drop_runner_connection()
        self._finish(close=False)

    def pause_reading_runner(self) -> None:
        """The caller reads slower than the runner writes: stop reading the runner for now."""
        self._runner_paused = True
        conn = self._conn
        if conn is not None and conn.transport is not None and not conn.closed:
            conn.transport.pause_reading()

    def resume_reading_runner(self) -> None:
        self._runner_paused = False
        conn = self._conn
        if conn is not None and conn.transport is not None and not conn.closed:
            conn.transport.resume_reading()

    # -- the runner's side (the upstream connection's sink) -----------------------------------------------------
    def _send(self) -> None:
        assert self.lease is not None
        runner = self.lease.runner
        conn = self.gateway.upstream.take_idle(runner.host, runner.port, runner.holder)
        if conn is None:
            self._connecting = asyncio.ensure_future(self._connect_and_send())
        else:
            self._write_request(conn)

    async def _connect_and_send(self) -> None:
        assert self.lease is not None
        runner = self.lease.runner
        try:
            conn = await self.gateway.upstream.connect(runner.host, runner.port, runner.holder)
        except UpstreamError as exc:
            self._retried = True
            self.upstream_error(exc)
            return
        if self.response_complete:  # the caller left or the timeout fired meanwhile
            conn.close()
            return
        self._retried = True  # a fresh connection: a failure on it is the runner's, not a stale socket's
        self._write_request(conn)

    def _write_request(self, conn: Connection) -> None:
        self._conn = conn
        conn.begin_sink(self, self.method == "HEAD")
        assert conn.transport is not None
        conn.transport.write(self._request)
        if self._runner_paused or self.downstream.write_paused:  # the caller was slow before this began
            self.pause_reading_runner()

    def _reuse_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if self._runner_paused and conn.transport is not None and not conn.closed:
            conn.transport.resume_reading()  # the pause was for this exchange, not the next one
        self.gateway.upstream.reuse(conn)

    def upstream_response(self, status: int, headers: Headers, body: bytes) -> None:
        self._note_status(status, headers)
        out = response_headers(headers, self.request_id.encode())
        self._started = True
        self.downstream.send_now(self._head(status, out) + body)
        recorder = self.gateway.recorder
        if recorder is not None:
            recorder.response_body(self.request_id, headers, body)
        self._reuse_connection()
        self._finish(close=False)

    def upstream_head(self, status: int, headers: Headers) -> None:
        self._note_status(status, headers)
        out = response_headers(headers, self.request_id.encode())
        bodyless = self.method == "HEAD" or status in (204, 304) or status < 200
        if not bodyless and not any(name == b"content-length" for name, _ in headers):
            self._chunked = True
            out.append(_CHUNKED)
        self.downstream.transport.write(self._head(status, out))
        self._started = True
        recorder = self.gateway.recorder
        if recorder is not None:
            recorder.response_body(self.request_id, headers, b"")

    def _note_status(self, status: int, headers: Headers) -> None:
        self.status = status
        if status == 503:
            self.outcome = "replace"  # fal stops a runner that answers 503
        hints = runner_hints(headers)
        if hints is not None and self.lease is not None:
            self.gapp.pool.set_hints(self.lease.runner.id, hints)

    def upstream_body(self, chunk: bytes) -> None:
        recorder = self.gateway.recorder
        if recorder is not None:
            recorder.response_body(self.request_id, _NO_HEADERS, chunk)
        transport = self.downstream.transport
        if self._chunked:
            transport.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        else:
            transport.write(chunk)

    def upstream_end(self) -> None:
        if self._chunked:
            self.downstream.transport.write(b"0\r\n\r\n")
        self._reuse_connection()
        self._finish(close=False)

    def upstream_error(self, exc: UpstreamError) -> None:
        if self.response_complete:
            return
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
            if (
                not self._started
                and not self._retried
                and not conn.got_bytes
                and not self.gateway.closed
                and replayable(self.method, self.incoming.forward)
            ):
                # A kept-alive connection the runner had already closed: try once on a new one.
                self._retried = True
                self._connecting = asyncio.ensure_future(self._connect_and_send())
                return
        self.outcome = "error" if exc.error_type == "runner_incomplete_response" else "replace"
        self.error_type = exc.error_type
        if self._started:
            self._finish(close=True)  # the caller sees the answer cut short
            return
        self._answer_error(PlatformError(str(exc), exc.error_type))

    def body_timed_out(self) -> None:
        """The body stopped arriving for ``body_timeout`` seconds (the caller's connection keeps the time)."""
        if self.response_complete or not self.awaiting_body:
            return
        self._answer_error(body_timeout_error(self.gateway.body_timeout), close=True)

    def timed_out(self) -> None:
        """The app's ``request_timeout`` ran out (the caller's connection keeps the time)."""
        if self.response_complete:
            return
        self.outcome = "replace"
        self.error_type = "request_timeout"
        self._drop_runner_connection()
        if self._started:
            self.status = 504
            self._finish(close=True)
            return
        self._answer_error(request_timeout_error(float(self.gapp.config.scaling.request_timeout)))

    # -- answering and finishing ---------------------------------------------------------------------------------
    def _head(self, status: int, headers: Headers) -> bytes:
        if not self.keep_alive:
            headers.append(_CLOSE)
        lines = [_status_line(status)]
        for name, value in self.downstream.default_headers:
            lines.append(b"%s: %s\r\n" % (name, value))
        for name, value in headers:
            lines.append(b"%s: %s\r\n" % (name, value))
        lines.append(b"\r\n")
        return b"".join(lines)

    def _answer_error(self, exc: PlatformError, *, close: bool = False) -> None:
        body = exc.encode()
        headers = exc.response_headers(self.request_id)
        headers.append((b"content-length", b"%d" % len(body)))
        self.status = exc.status
        self.error_type = exc.error_type
        self.downstream.send_now(self._head(exc.status, headers) + (body if self.method != "HEAD" else b""))
        recorder = self.gateway.recorder
        if recorder is not None:
            recorder.response_body(self.request_id, headers, body)
        self._finish(close=close)

    def _drop_runner_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.begin_sink(_IGNORE, True)  # what still arrives goes nowhere
            conn.close()

    def _finish(self, *, close: bool) -> None:
        if self.response_complete:
            return
        self.response_complete = True
        gateway = self.gateway
        lease = self.lease
        try:
            if lease is not None:
                self.gapp.pool.release_nowait(lease, self.outcome)
        finally:
            if close or not self.keep_alive:
                self.downstream.transport.close()
            self.downstream.exchange_done(self)
            gateway.emit(
                RequestCompleted(
                    self.gapp.config.alias,
                    request_id=self.request_id,
                    runner=lease.runner.id if lease is not None else "",  # "": no runner took it
                    status_code=self.status,
                    seconds=time.monotonic() - self._began if lease is not None else 0.0,
                    endpoint=self.path,
                    method=self.method,
                    error_type=self.error_type,
                    queue_wait=self._waited,
                )
            )


class _Ignore:
    """The sink of a runner connection whose exchange was abandoned."""

    def upstream_response(self, status: int, headers: Headers, body: bytes) -> None:
        pass

    def upstream_head(self, status: int, headers: Headers) -> None:
        pass

    def upstream_body(self, chunk: bytes) -> None:
        pass

    def upstream_end(self) -> None:
        pass

    def upstream_error(self, exc: UpstreamError) -> None:
        pass


_IGNORE = _Ignore()


def _status_line(status: int) -> bytes:
    line = STATUS_LINE.get(status)
    return line if line is not None else b"HTTP/1.1 %d \r\n" % status
