"""How the gateway is served: uvicorn options and an HTTP protocol with a fast path that coalesces writes.

:class:`GatewayHttpProtocol` is uvicorn's httptools protocol with three changes. When a request's head
is parsed, it first asks :func:`falemu.gateway.fastpath.begin` whether the request can skip the ASGI app
(a plain sync request with a runner free at once); if so the request is forwarded by callbacks, and
uvicorn's request cycle, ASGI scope and task are never made. Every other request goes to the gateway's
ASGI app as usual, pipelined requests included.

Second, uvicorn writes a response's status line and headers in one ``transport.write`` and each body
part in another, so a small response would cost the gateway two socket sends and the caller two
wake-ups. The protocol collects the writes made within one event-loop step
and sends them together as soon as the response is complete, or at the end of the step when it is not
(a streamed response's head and parts are never held longer): head and a small body leave in one
segment. Large writes (``>= _DIRECT_WRITE`` bytes) go out at once, after anything collected before
them, so big bodies are neither delayed nor copied. A websocket upgrade hands the connection over
uncorked.

Third, the keep-alive limit, a fast request's ``body_timeout`` (while its body arrives) and its
``request_timeout`` share one timer per connection, which checks the clock when it fires instead of
being armed and cancelled around every request.

:func:`gateway_server_options` is the uvicorn configuration every place that serves the gateway uses
(``falemu up``, the test harness, the benchmark); :func:`falemu.gateway.loop.new_event_loop` gives
uvloop's loop when uvloop is installed (about 15% less CPU per forwarded request than asyncio's), else
asyncio's.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from falemu.gateway import fastpath, limits, tunnel

if TYPE_CHECKING:
    from falemu.gateway.app import Gateway
    from falemu.gateway.fastpath import FastExchange

_DIRECT_WRITE = 16 * 1024  # writes at least this large skip the collecting buffer


class _CorkedTransport:
    """Wraps a transport: ``write`` calls within one loop step become one write to the socket."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self.raw = transport
        self._loop = loop
        self._pending: list[bytes] = []
        self._handle: asyncio.Handle | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if len(data) >= _DIRECT_WRITE:
            self.flush()
            self.raw.write(data)
            return
        if not data:
            return
        self._pending.append(bytes(data))
        if self._handle is None:
            self._handle = self._loop.call_soon(self.flush)

    def write_now(self, data: bytes) -> None:
        """Send ``data`` at once, after anything collected before it."""
        if self._pending:
            self.flush()
        if not self.raw.is_closing():
            self.raw.write(data)

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def flush(self) -> None:
        handle = self._handle
        if handle is not None:
            self._handle = None
            handle.cancel()
        pending = self._pending
        if not pending:
            return
        data = pending[0] if len(pending) == 1 else b"".join(pending)
        pending.clear()
        if not self.raw.is_closing():
            self.raw.write(data)

    def get_write_buffer_size(self) -> int:
        return self.raw.get_write_buffer_size() + sum(len(p) for p in self._pending)

    def close(self) -> None:
        self.flush()
        self.raw.close()

    def write_eof(self) -> None:
        self.flush()
        self.raw.write_eof()

    def abort(self) -> None:
        self._pending.clear()
        self.raw.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.raw, name)


class HeadRefused(Exception):
    """Raised from a parser callback to stop parsing a request head that breaks a limit."""


class GatewayHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the writes of one loop step sent as one, the sync API's fast
    path (:mod:`falemu.gateway.fastpath`) for the requests that can take it, the limits of
    :mod:`falemu.gateway.limits` on request heads, and CONNECT (:mod:`falemu.gateway.tunnel`)."""

    fast_path = True
    tunnel_host: bytes | None = None  # on an intercepted CONNECT tunnel: the Host its requests have
    _gateway: Gateway | None = None
    _exchange: FastExchange | None = None
    _last_active = 0.0  # loop time of the connection's last request byte or finished response
    _timer_due = 0.0  # when the connection's timer (timeout_keep_alive_task) fires
    _exchange_due: float | None = None  # when the fast exchange in progress times out
    _head_due: float | None = None  # while a request head is awaited or arriving: when it times out
    url = b""  # the request target so far (uvicorn sets it only once a request begins: blank lines come first)
    _head_bytes = 0  # bytes received since the request head in progress began
    _fields_bytes = 0  # bytes of the header fields of the head in progress, as parsed
    _refusal: tuple[int, str] | None = None  # the answer to a head that broke a limit
    _lingering = False  # refused: what the caller still sends is read and dropped until it closes
    _connect_target: bytes | None = None  # the authority of a CONNECT request whose head is complete
    _detached = False  # the connection was handed to a tunnel

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        corked = _CorkedTransport(transport, self.loop)
        super().connection_made(corked)  # type: ignore[arg-type]
        self._gateway = _find_gateway(self.app)
        self._last_active = self.loop.time()
        self._head_due = self._last_active + limits.HEAD_TIMEOUT  # the first request's head
        self._timer_at(self._head_due)

    # -- timers ----------------------------------------------------------------------------------------------
    # uvicorn arms a keep-alive timer after every response and cancels it when the next request's bytes
    # arrive, and a fast exchange would arm and cancel its request_timeout: timer operations on every
    # request. Here one timer per connection keeps both limits: when it fires it checks the clock and
    # either acts or sleeps again until the next due time. A request costs a clock read.
    def _unset_keepalive_if_required(self) -> None:
        self._last_active = self.loop.time()

    def _timer_at(self, due: float) -> None:
        """Make the connection's timer fire no later than ``due`` (loop time)."""
        if self.timeout_keep_alive_task is not None:
            if self._timer_due <= due:
                return
            self.timeout_keep_alive_task.cancel()
        self._timer_due = due
        self.timeout_keep_alive_task = self.loop.call_at(due, self._check_timers)

    def time_limit(self, seconds: float) -> None:
        self._exchange_due = self.loop.time() + seconds
        self._timer_at(self._exchange_due)

    def _check_timers(self) -> None:
        self.timeout_keep_alive_task = None
        if self.transport.is_closing() or self._detached:
            return
        now = self.loop.time()
        if self._head_due is not None:
            if now >= self._head_due:
                self._head_timed_out()
                return
            self._timer_at(self._head_due)
        exchange = self._exchange
        if exchange is not None and self._exchange_due is not None:
            if now >= self._exchange_due:
                exchange.timed_out()
                return
            self._timer_at(min(self._exchange_due, now + self.timeout_keep_alive))
        elif exchange is not None and exchange.awaiting_body:
            due = self._last_active + exchange.gateway.body_timeout  # since the body's last bytes
            if now >= due:
                exchange.body_timed_out()
                return
            self._timer_at(due)
        elif self.cycle is not None and not self.cycle.response_complete:
            self._timer_at(now + self.timeout_keep_alive)  # an ASGI request in progress: not idle
        elif now < self._last_active + self.timeout_keep_alive:
            self._timer_at(self._last_active + self.timeout_keep_alive)
        else:
            self.timeout_keep_alive_handler()

    def _head_timed_out(self) -> None:
        if self._head_bytes or self.url or self.headers:
            self._refuse(408, f"Request head not received within {limits.HEAD_TIMEOUT:g} seconds")
        else:
            self.transport.close()

    def idle_since(self) -> float | None:
        """Loop time since which no request is in progress here, or None when one is."""
        if self._exchange is not None or self._detached or self._lingering:
            return None
        if self.cycle is not None and not self.cycle.response_complete:
            return None
        return self._last_active

    @property
    def gateway(self) -> Gateway | None:
        return self._gateway

    @property
    def default_headers(self) -> list[tuple[bytes, bytes]]:
        return self.server_state.default_headers

    @property
    def write_paused(self) -> bool:
        return self.flow is not None and self.flow.write_paused

    # -- reading request heads -------------------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        self._last_active = self.loop.time()
        if self._lingering:
            return  # a refused head's remainder: dropped
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            target = self._connect_target
            if target is not None:
                self._connect_target = None
                offset = exc.args[0] if exc.args and isinstance(exc.args[0], int) else len(data)
                tunnel.open_tunnel(self, target, data[offset:])
            elif self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError:
            if self._refusal is not None:
                self._refuse(*self._refusal)
            else:
                self.logger.warning("Invalid HTTP request received.")
                self.send_400_response("Invalid HTTP request received.")
            return
        if self._head_due is not None:  # the head in progress is not complete: all of this was head
            self._head_bytes += len(data)
            if self._head_bytes - len(self.url) > limits.MAX_HEADER_BYTES:
                self._refuse(*limits.headers_too_large())
            return
        exchange = self._exchange
        if exchange is not None and exchange.awaiting_body:  # a body still to come: keep its time limit
            self._timer_at(self._last_active + exchange.gateway.body_timeout)

    def on_url(self, url: bytes) -> None:
        self.url += url
        if len(self.url) > limits.MAX_URL:
            self._refusal = limits.url_too_long()
            raise HeadRefused

    def on_header(self, name: bytes, value: bytes) -> None:
        headers = self.headers
        self._fields_bytes += len(name) + len(value) + 4
        if len(headers) >= limits.MAX_HEADERS or self._fields_bytes > limits.MAX_HEADER_BYTES:
            self._refusal = (
                limits.too_many_headers() if len(headers) >= limits.MAX_HEADERS else limits.headers_too_large()
            )
            raise HeadRefused
        name = name.lower()
        if name == b"expect" and value.lower() == b"100-continue":
            self.expect_100_continue = True
        headers.append((name, value))

    def _refuse(self, status: int, detail: str) -> None:
        """Answer a head that broke a limit (nothing was forwarded), then close once the caller stops
        sending or :data:`~falemu.gateway.limits.LINGER` seconds pass, so the answer is read, not reset."""
        self._lingering = True
        self._head_due = None
        if self.timeout_keep_alive_task is not None:
            self.timeout_keep_alive_task.cancel()
            self.timeout_keep_alive_task = None
        transport = self.transport
        if transport.is_closing():
            return
        self.send_now(limits.error_response(status, detail))
        if transport.can_write_eof():
            transport.write_eof()
        self.loop.call_later(limits.LINGER, transport.close)

    def eof_received(self) -> None:
        if self._lingering:
            self.transport.close()

    # -- the fast path ---------------------------------------------------------------------------------------
    def on_message_begin(self) -> None:
        # uvicorn builds the request's ASGI scope here; the fast path never needs it, so it is built
        # only when the request goes to the ASGI app (_build_scope).
        self.url = b""
        self.expect_100_continue = False
        self.headers = []
        self._head_bytes = self._fields_bytes = 0
        self._head_due = self._last_active + limits.HEAD_TIMEOUT
        self._timer_at(self._head_due)

    def _build_scope(self) -> None:
        url, headers, expect = self.url, self.headers, self.expect_100_continue
        HttpToolsProtocol.on_message_begin(self)  # the scope, as uvicorn makes it (it resets the rest)
        self.url, self.expect_100_continue = url, expect
        self.headers.extend(headers)  # the scope holds this very list

    def on_headers_complete(self) -> None:
        self._head_due = None
        if self.tunnel_host is not None:  # requests on an intercepted tunnel are for the tunnel's host
            self.headers[:] = [(n, v) for n, v in self.headers if n != b"host"] + [(b"host", self.tunnel_host)]
        gateway = self._gateway
        if (
            gateway is not None
            and self.fast_path
            and (self.cycle is None or self.cycle.response_complete)
            and not self.expect_100_continue
            and not self.parser.should_upgrade()
            and self.parser.get_http_version() == "1.1"
        ):
            exchange = fastpath.begin(
                gateway, self, self.parser.get_method(), self.url, self.headers, self.parser.should_keep_alive()
            )
            if exchange is not None:
                self._exchange = exchange
                self.cycle = exchange  # type: ignore[assignment]  # uvicorn reads response_complete and keep_alive
                return
        if self.parser.get_method() == b"CONNECT":
            self._connect_target = self.url  # feed_data stops after this head: data_received opens the tunnel
            return
        self._build_scope()
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if self._exchange is not None and self.cycle is self._exchange:  # type: ignore[comparison-overlap]
            self._exchange.request_body(body)
        elif self._connect_target is None:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._exchange is not None and self.cycle is self._exchange:  # type: ignore[comparison-overlap]
            self._exchange.request_complete()
        elif self._connect_target is None:  # (a CONNECT request has no request cycle)
            super().on_message_complete()

    def send_now(self, data: bytes) -> None:
        transport = self.transport
        if isinstance(transport, _CorkedTransport):
            transport.write_now(data)
        else:
            transport.write(data)

    def exchange_done(self, exchange: FastExchange) -> None:
        if self._exchange is exchange:
            self._exchange = None
            self._exchange_due = None
        self.on_response_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        exchange = self._exchange
        self._exchange = None
        if isinstance(self.cycle, fastpath.FastExchange):
            self.cycle = None  # type: ignore[assignment]  # uvicorn would signal a request cycle
        if exchange is not None:
            exchange.client_lost()
        if self.timeout_keep_alive_task is not None:
            self.timeout_keep_alive_task.cancel()
            self.timeout_keep_alive_task = None
        super().connection_lost(exc)

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._exchange is not None:
            self._exchange.pause_reading_runner()

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._exchange is not None:
            self._exchange.resume_reading_runner()

    def on_response_complete(self) -> None:
        # uvicorn's, with the connection timer of _check_timers
        transport = self.transport
        if isinstance(transport, _CorkedTransport):
            transport.flush()  # the whole response is written: send it now, not at the end of the step
        if self.pipeline:
            super().on_response_complete()  # starts the next pipelined request's ASGI task
            return
        self.server_state.total_requests += 1
        if transport.is_closing():
            return
        self._last_active = self.loop.time()
        self.flow.resume_reading()
        self._timer_at(self._last_active + self.timeout_keep_alive)

    def detach(self) -> asyncio.Transport:
        """Stop serving HTTP here and return the connection's transport, reading paused (for a tunnel)."""
        self._detached = True
        self._head_due = None
        self.connections.discard(self)
        if self.timeout_keep_alive_task is not None:
            self.timeout_keep_alive_task.cancel()
            self.timeout_keep_alive_task = None
        transport = self.transport
        if isinstance(transport, _CorkedTransport):
            transport.flush()
            transport = transport.raw
        transport.pause_reading()
        return transport

    def handle_websocket_upgrade(self) -> None:
        if self.timeout_keep_alive_task is not None:  # the websocket protocol keeps its own time from here
            self.timeout_keep_alive_task.cancel()
            self.timeout_keep_alive_task = None
        transport = self.transport
        if isinstance(transport, _CorkedTransport):
            transport.flush()
            self.transport = transport.raw
        super().handle_websocket_upgrade()


class GatewayAsgiProtocol(GatewayHttpProtocol):
    """The gateway's protocol without the fast path: every request goes to the ASGI app."""

    fast_path = False


def _find_gateway(app: Any) -> Gateway | None:
    """The falemu gateway behind uvicorn's middleware (proxy headers), if the served app is one."""
    from falemu.gateway.app import Gateway

    for _ in range(4):
        if isinstance(app, Gateway):
            return app
        app = getattr(app, "app", None)
        if app is None:
            return None
    return None


def gateway_server_options() -> dict[str, Any]:
    """uvicorn.Config keyword arguments for serving the gateway."""
    return {
        "http": GatewayHttpProtocol,
        "log_level": "warning",
        "access_log": False,
        "server_header": False,
        "date_header": False,
        "lifespan": "on",
        "timeout_graceful_shutdown": 2,
    }
