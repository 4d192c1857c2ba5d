"""The gateway's accept loop: plain HTTP and HTTPS on one port, told apart by a connection's first byte.

uvicorn serves a socket with ``loop.create_server``, which makes the connection's transport (plain or
TLS) before any byte arrives. :class:`GatewayServer` is uvicorn's ``Server`` with its own accept loop
instead: it accepts each connection, waits until it is readable, peeks at its first byte
(``recv(1, MSG_PEEK)``) and then gives the socket to ``loop.connect_accepted_socket`` with falemu's TLS
context when that byte starts a TLS handshake record (``0x16``), without one otherwise. Both then run
the same HTTP protocol, so ``http://`` and ``https://`` (fal_client's) reach the same gateway, and
websocket upgrades, graceful shutdown and uvicorn's connection tracking work as before. The cost is
per connection (a peek and a task), not per request.

The TLS context is made the first time a TLS connection arrives (on a worker thread: making falemu's
CA the first time takes a moment), from uvicorn's ``ssl_certfile`` when one is configured, else from
falemu's local CA (:func:`falemu.gateway.tls.server_context`).

Connections that send nothing are closed after :data:`falemu.gateway.limits.HEAD_TIMEOUT`, as are TLS
handshakes that do not finish in that time. When the gateway starts, the soft limit on open files is
raised to the hard one; when a new connection's descriptor comes close to it (or the count of open
connections reaches :data:`falemu.gateway.limits.MAX_CONNECTIONS`, when set), the oldest idle
connections (no request in progress) are closed first, so a flood of idle connections cannot lock
every other caller out.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import uvicorn

from falemu.gateway import limits

if TYPE_CHECKING:
    import ssl

LOG = logging.getLogger(__name__)
TLS_RECORD = 0x16  # the first byte of a TLS handshake record (ClientHello)
_ACCEPT_BATCH = 128  # connections accepted per wake-up of the listening socket
_STARTUP_FAILURE = 3  # uvicorn.config.STARTUP_FAILURE
_OUT_OF_FILES = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


class Listener:
    """One listening socket. Quacks like the ``asyncio.Server`` uvicorn keeps in ``Server.servers``."""

    def __init__(
        self,
        sock: socket.socket,
        factory: Callable[[], asyncio.Protocol],
        connections: set[Any],
        tls: Callable[[], ssl.SSLContext],
        *,
        own_socket: bool,
        soft_limit: int,
    ) -> None:
        self.sockets = [sock]
        self._sock = sock
        self._factory = factory
        self._connections = connections  # uvicorn's server_state.connections: the protocols serving
        self._make_tls = tls
        self._tls: asyncio.Future[ssl.SSLContext] | None = None
        self._own_socket = own_socket
        self._loop = asyncio.get_running_loop()
        self._fd_budget = limits.descriptor_budget(soft_limit)
        self.waiting: dict[socket.socket, tuple[float, asyncio.TimerHandle]] = {}  # before their first byte
        self._adopting: set[asyncio.Task[None]] = set()
        self._accepting = False
        self._closed = False
        sock.setblocking(False)

    # -- accepting ---------------------------------------------------------------------------------------
    def start(self) -> None:
        if not self._accepting and not self._closed:
            self._loop.add_reader(self._sock.fileno(), self._accept)
            self._accepting = True

    def _pause(self, seconds: float) -> None:
        if self._accepting:
            self._loop.remove_reader(self._sock.fileno())
            self._accepting = False
        self._loop.call_later(seconds, self.start)

    def _accept(self) -> None:
        for _ in range(_ACCEPT_BATCH):
            try:
                conn, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in _OUT_OF_FILES:
                    # Out of descriptors: close idle connections; if there were none, wait a little
                    # instead of spinning on a listening socket that stays readable.
                    if not self._shed(max(1, self._fd_budget // 50)):
                        self._pause(0.5)
                    return
                if exc.errno in (errno.ECONNABORTED, errno.EPROTO):
                    continue
                LOG.warning("accept failed: %s", exc)
                self._pause(0.5)
                return
            conn.setblocking(False)
            if conn.family != socket.AF_UNIX:  # as loop.create_server does (asyncio's adoption would not)
                with contextlib.suppress(OSError):
                    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if conn.fileno() >= self._fd_budget or (
                limits.MAX_CONNECTIONS is not None and self.open_count() >= limits.MAX_CONNECTIONS
            ):
                budget = limits.MAX_CONNECTIONS or self._fd_budget
                self._shed(max(1, budget // 20))
            self._greet(conn)

    def open_count(self) -> int:
        return len(self.waiting) + len(self._adopting) + len(self._connections)

    def _greet(self, conn: socket.socket) -> None:
        """Hand ``conn`` over once its first byte is there; wait for it (bounded) when it is not yet."""
        try:
            first = conn.recv(1, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            fd = conn.fileno()
            timer = self._loop.call_later(limits.HEAD_TIMEOUT, self._forget, conn)
            self.waiting[conn] = (self._loop.time(), timer)
            self._loop.add_reader(fd, self._readable, conn)
            return
        except OSError:
            conn.close()
            return
        if not first:  # the caller hung up without a byte
            conn.close()
            return
        task = self._loop.create_task(self._adopt(conn, first[0] == TLS_RECORD))
        self._adopting.add(task)
        task.add_done_callback(self._adopting.discard)

    def _readable(self, conn: socket.socket) -> None:
        self._unwait(conn)
        self._greet(conn)

    def _unwait(self, conn: socket.socket) -> None:
        entry = self.waiting.pop(conn, None)
        if entry is not None:
            entry[1].cancel()
            with contextlib.suppress(OSError, ValueError):
                self._loop.remove_reader(conn.fileno())

    def _forget(self, conn: socket.socket) -> None:
        """Close a connection that sent nothing (in time, or at all)."""
        self._unwait(conn)
        conn.close()

    async def _adopt(self, conn: socket.socket, tls: bool) -> None:
        try:
            context = await self._context() if tls else None
            await self._loop.connect_accepted_socket(
                self._factory, conn, ssl=context, ssl_handshake_timeout=limits.HEAD_TIMEOUT if tls else None
            )
        except asyncio.CancelledError:
            conn.close()
            raise
        except Exception as exc:  # a failed handshake, a caller gone: this connection only
            LOG.debug("connection not taken: %s: %s", type(exc).__name__, exc)
            conn.close()

    async def _context(self) -> ssl.SSLContext:
        if self._tls is None:
            self._tls = asyncio.ensure_future(asyncio.to_thread(self._make_tls))
        return await asyncio.shield(self._tls)

    # -- shedding ----------------------------------------------------------------------------------------
    def _shed(self, count: int) -> int:
        """Close up to ``count`` of the oldest idle connections; returns how many were closed."""
        idle: list[tuple[float, Callable[[], None]]] = []
        for conn, (accepted, _) in self.waiting.items():
            idle.append((accepted, lambda conn=conn: self._forget(conn)))  # type: ignore[misc]
        for protocol in self._connections:
            idle_since = getattr(protocol, "idle_since", None)
            since: float | None = idle_since() if idle_since is not None else None
            if since is not None:
                idle.append((since, protocol.transport.close))
        idle.sort(key=lambda item: item[0])
        for _, close in idle[:count]:
            close()
        shed = min(count, len(idle))
        if shed:
            LOG.warning("close to the limit of open files: closed the %d oldest idle connection(s)", shed)
        return shed

    # -- asyncio.Server's face, for uvicorn's shutdown ------------------------------------------------------
    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._accepting:
            self._loop.remove_reader(self._sock.fileno())
            self._accepting = False
        for conn in list(self.waiting):
            self._forget(conn)
        for task in self._adopting:
            task.cancel()
        if self._own_socket:
            self._sock.close()

    async def wait_closed(self) -> None:
        if self._adopting:
            await asyncio.gather(*self._adopting, return_exceptions=True)


class GatewayServer(uvicorn.Server):
    """uvicorn's Server, accepting connections with :class:`Listener` (HTTP and HTTPS on each socket)."""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await self.lifespan.startup()
        if self.lifespan.should_exit:
            sys.exit(_STARTUP_FAILURE)
        config = self.config
        loop = asyncio.get_running_loop()

        def create_protocol() -> asyncio.Protocol:
            protocol: asyncio.Protocol = config.http_protocol_class(  # type: ignore[call-arg]
                config=config, server_state=self.server_state, app_state=self.lifespan.state, _loop=loop
            )
            return protocol

        soft_limit = limits.raise_open_files_limit()
        own = sockets is None
        try:
            listening = sockets if sockets is not None else [_bind(config.host, config.port, config.backlog)]
        except OSError as exc:
            LOG.error("cannot listen on %s:%s: %s", config.host, config.port, exc)
            await self.lifespan.shutdown()
            sys.exit(_STARTUP_FAILURE)
        listeners = [
            Listener(
                sock,
                create_protocol,
                self.server_state.connections,
                self._tls_context,
                own_socket=own,
                soft_limit=soft_limit,
            )
            for sock in listening
        ]
        for listener in listeners:
            listener.start()
        self.servers = listeners  # type: ignore[assignment]  # close() and wait_closed() are what uvicorn uses
        self.started = True

    def _tls_context(self) -> ssl.SSLContext:
        if self.config.ssl is not None:  # uvicorn's ssl_certfile / ssl_keyfile
            context: ssl.SSLContext = self.config.ssl
            return context
        from falemu.gateway.tls import server_context

        return server_context()


def _bind(host: str, port: int, backlog: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    return sock
