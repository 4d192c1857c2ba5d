"""HTTPS proxy tunnels: the gateway answers ``CONNECT host:port``, so it can be a shell's ``HTTPS_PROXY``.

fal_client uploads to hard-coded ``https://`` hosts (``rest.fal.ai``, ``v3.fal.media``) and honours the
standard proxy variables. With ``HTTPS_PROXY`` pointing at the gateway, each such connection starts with
``CONNECT host:443``, and :meth:`falemu.gateway.app.Gateway.tunnel_mode` decides what happens:

- ``"intercept"``: answer 200, then serve TLS on the tunnel with a certificate for ``host`` from
  falemu's CA (:func:`falemu.gateway.tls.server_context`), and go on as an ordinary gateway connection
  whose requests all have that ``Host`` (which :meth:`~falemu.gateway.app.Gateway.mount_host` routes);
- ``"passthrough"``: connect to ``host:port`` and answer 200, then relay bytes both ways, with
  back-pressure (a side that cannot keep up pauses the other's reading) and half-closes passed on,
  so the rest of the caller's HTTPS traffic keeps working while ``HTTPS_PROXY`` points at falemu.
  Only callers on this machine (loopback) get one: a gateway listening on a public address must not
  be an open proxy;
- ``"refuse"``: 403.

Answers the gateway makes itself (400 for a malformed target, 403, 502 when ``host:port`` cannot be
reached) are fal-style JSON errors, and the connection closes after them.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, Literal

from falemu.gateway import limits

if TYPE_CHECKING:
    from falemu.gateway.server import GatewayHttpProtocol

TunnelMode = Literal["intercept", "passthrough", "refuse"]
LOG = logging.getLogger(__name__)
CONNECTED = b"HTTP/1.1 200 Connection Established\r\n\r\n"
CONNECT_TIMEOUT = 10.0  # seconds to reach host:port of a passthrough tunnel
_tasks: set[asyncio.Task[None]] = set()


def parse_authority(target: bytes) -> tuple[str, int] | None:
    """``host:port`` (``[v6]:port`` for IPv6) of a CONNECT request, or None when it is not one."""
    try:
        text = target.decode("ascii")
    except UnicodeDecodeError:
        return None
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return None
    elif not host or any(c in host for c in "/[]@ ?#:"):
        return None
    return host.lower(), int(port)


def _from_loopback(protocol: GatewayHttpProtocol) -> bool:
    client = protocol.client
    if client is None:
        return False
    try:
        return ipaddress.ip_address(client[0]).is_loopback
    except ValueError:
        return False


def open_tunnel(protocol: GatewayHttpProtocol, target: bytes, leftover: bytes) -> None:
    """Answer the CONNECT request whose head ``protocol`` just parsed; ``leftover``: bytes after the head."""
    transport = protocol.detach()
    authority = parse_authority(target)
    if authority is None:
        _answer(transport, 400, "CONNECT needs a host:port target")
        return
    host, port = authority
    gateway = protocol.gateway
    mode: str = gateway.tunnel_mode(host, port) if gateway is not None else "refuse"
    if mode == "passthrough" and not _from_loopback(protocol):
        mode = "refuse"
    if mode == "intercept":
        if leftover:  # a TLS client waits for the 200 before its handshake: this is not one
            _answer(transport, 400, "Data sent before the tunnel was established")
            return
        _spawn(_intercept(protocol, transport, host, port))
    elif mode == "passthrough":
        _spawn(_passthrough(protocol, transport, host, port, leftover))
    else:
        _answer(transport, 403, f"Tunnels to {host}:{port} are not allowed")


def _spawn(coroutine: Coroutine[Any, Any, None]) -> None:
    task = asyncio.get_running_loop().create_task(coroutine)
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


def _answer(transport: asyncio.Transport, status: int, detail: str) -> None:
    if not transport.is_closing():
        transport.write(limits.error_response(status, detail))
        transport.close()


class _Pending:
    """Stands in uvicorn's connection set while a tunnel is being opened, so a shutdown closes it."""

    def __init__(self, transport: asyncio.Transport, connections: set[Any]) -> None:
        self.transport = transport
        self._connections = connections
        connections.add(self)

    def shutdown(self) -> None:
        self.transport.close()

    def done(self) -> None:
        self._connections.discard(self)


async def _intercept(protocol: GatewayHttpProtocol, transport: asyncio.Transport, host: str, port: int) -> None:
    from falemu.gateway.tls import server_context

    pending = _Pending(transport, protocol.connections)
    loop = asyncio.get_running_loop()
    try:
        try:
            context = await asyncio.to_thread(server_context, host)
        except Exception as exc:
            LOG.warning("no certificate for %s: %s", host, exc)
            _answer(transport, 502, f"No certificate for {host}")
            return
        if transport.is_closing():
            return
        served = type(protocol)(
            config=protocol.config, server_state=protocol.server_state, app_state=protocol.app_state, _loop=loop
        )
        served.tunnel_host = host.encode() if port == 443 else f"{host}:{port}".encode()
        transport.write(CONNECTED)
        try:
            tls_transport = await loop.start_tls(
                transport, served, context, server_side=True, ssl_handshake_timeout=limits.HEAD_TIMEOUT
            )
        except (TimeoutError, OSError, ConnectionError) as exc:
            LOG.debug("tunnel to %s: TLS handshake failed: %s", host, exc)
            transport.close()
            return
        except Exception as exc:  # ssl.SSLError and the like: this tunnel only
            LOG.debug("tunnel to %s: TLS handshake failed: %s", host, exc)
            transport.close()
            return
        if tls_transport is None:  # pragma: no cover - the caller went away during the handshake
            transport.close()
            return
        served.connection_made(tls_transport)
    finally:
        pending.done()


class _Relay(asyncio.Protocol):
    """One side of a passthrough tunnel: what arrives here is written to the other side."""

    def __init__(self, tunnel: _Tunnel) -> None:
        self.tunnel = tunnel
        self.transport: asyncio.Transport | None = None
        self.peer: _Relay | None = None
        self.eof = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        peer = self.peer
        if peer is not None and peer.transport is not None:
            peer.transport.write(data)

    def eof_received(self) -> bool:
        self.eof = True
        peer = self.peer
        if peer is None or peer.transport is None or peer.eof or not peer.transport.can_write_eof():
            self.tunnel.close()
            return False
        peer.transport.write_eof()  # half-close: the other side may still answer
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.tunnel.close()

    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None and not self.peer.transport.is_closing():
            self.peer.transport.resume_reading()


class _Tunnel:
    """A passthrough tunnel: two relays; closing either side closes both (after what is buffered)."""

    def __init__(self) -> None:
        self.caller = _Relay(self)
        self.target = _Relay(self)
        self.caller.peer, self.target.peer = self.target, self.caller
        self._connections: set[Any] = set()

    def track(self, connections: set[Any]) -> None:
        """Be in uvicorn's connection set (closed at shutdown) until the tunnel closes."""
        self._connections = connections
        connections.add(self)

    def shutdown(self) -> None:  # uvicorn's graceful shutdown
        self.close()

    def close(self) -> None:
        self._connections.discard(self)
        for side in (self.caller, self.target):
            if side.transport is not None and not side.transport.is_closing():
                side.transport.close()


async def _passthrough(
    protocol: GatewayHttpProtocol, transport: asyncio.Transport, host: str, port: int, leftover: bytes
) -> None:
    pending = _Pending(transport, protocol.connections)
    tunnel = _Tunnel()
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT):
            await loop.create_connection(lambda: tunnel.target, host, port)
    except (TimeoutError, OSError) as exc:
        detail = "timed out" if isinstance(exc, asyncio.TimeoutError) else (exc.strerror or str(exc))
        _answer(transport, 502, f"Cannot reach {host}:{port}: {detail}")
        return
    finally:
        pending.done()
    if transport.is_closing():  # the caller left (or the gateway is stopping) while the target was reached
        tunnel.close()
        return
    tunnel.caller.connection_made(transport)
    tunnel.track(protocol.connections)
    transport.write(CONNECTED)
    if leftover and tunnel.target.transport is not None:
        tunnel.target.transport.write(leftover)
    transport.set_protocol(tunnel.caller)
    with contextlib.suppress(RuntimeError):
        transport.resume_reading()
