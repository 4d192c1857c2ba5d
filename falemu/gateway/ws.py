"""WebSocket forwarding: ``wss://<gateway>/{owner}/{app}/{path}`` to the same path on a runner.

fal forwards websocket traffic of direct-server and realtime apps to the runner. fal_client's
``ws_connect()`` and ``realtime()`` first fetch a short-lived token from ``rest.fal.ai/tokens/`` (served
by falemu, see falemu.gateway.realtime_tokens) and send it as ``?fal_jwt_token=``; with
``use_jwt=False`` they send the key in ``Authorization`` instead. The runner sees the caller's path and
query (without ``fal_jwt_token``), subprotocols and headers, plus the gateway's ``x-fal-*`` identity
headers; each message goes through as it is, text or binary, and a close on either side closes the
other with the same code.

Needs the ``websockets`` package (also what uvicorn uses to accept websockets).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode

from falemu.events import RequestCompleted, RequestStarted
from falemu.gateway.asgi import acquire, new_request_id, start_timeout
from falemu.gateway.errors import PlatformError
from falemu.gateway.headers import identity_headers, split_headers
from falemu.gateway.upstream import Headers
from falemu.runtime.addresses import holds
from falemu.scaling.pool import Outcome

if TYPE_CHECKING:
    from falemu.gateway.app import Gateway

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

HANDSHAKE_HEADERS = frozenset(
    {
        b"sec-websocket-key",
        b"sec-websocket-version",
        b"sec-websocket-extensions",
        b"sec-websocket-protocol",
        b"sec-websocket-accept",
    }
)


def runner_query(query: bytes) -> str:
    """The caller's query without the platform's ``fal_jwt_token``."""
    pairs = [(k, v) for k, v in parse_qsl(query.decode("latin-1"), keep_blank_values=True) if k != "fal_jwt_token"]
    return urlencode(pairs)


def jwt_token(query: bytes) -> str | None:
    """The caller's ``fal_jwt_token`` (the last one), if any."""
    found = [v for k, v in parse_qsl(query.decode("latin-1"), keep_blank_values=True) if k == "fal_jwt_token"]
    return found[-1] if found else None


async def refuse(scope: MutableMapping[str, Any], send: Send, exc: PlatformError, request_id: str) -> None:
    """Answer the handshake with the platform error as HTTP when the server allows it, else close."""
    if "websocket.http.response" in (scope.get("extensions") or {}):
        await send(
            {"type": "websocket.http.response.start", "status": exc.status, "headers": exc.response_headers(request_id)}
        )
        await send({"type": "websocket.http.response.body", "body": exc.encode()})
        return
    await send({"type": "websocket.close", "code": 1008, "reason": exc.detail[:120]})


async def forward(
    scope: MutableMapping[str, Any],
    receive: Receive,
    send: Send,
    *,
    host: str,
    port: int,
    target: str,
    headers: Headers,
    request_id: str,
    holder: int = 0,
) -> int:
    """Connect to the runner, accept the caller, pump messages both ways; returns the close code."""
    if not holds(host, port, holder):  # the runner's container is gone; its address may be another's now
        raise PlatformError(f"the runner at {host}:{port} is gone", "runner_connection_refused")
    try:
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
        from websockets.typing import Subprotocol
    except ImportError:  # pragma: no cover - installed with falemu
        raise PlatformError("websockets are not available: install the websockets package", "internal_error") from None

    forwarded = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers if k not in HANDSHAKE_HEADERS]
    subprotocols = [p.strip() for p in scope.get("subprotocols", []) if p.strip()]
    try:
        upstream = await connect(
            f"ws://{host}:{port}{target}",
            additional_headers=forwarded,
            subprotocols=[Subprotocol(p) for p in subprotocols] or None,
            compression=None,
            user_agent_header=None,
            proxy=None,
            max_size=None,
            open_timeout=30,
            ping_interval=None,
        )
    except InvalidStatus as exc:
        raise PlatformError(
            f"the runner refused the websocket with HTTP {exc.response.status_code}", "runner_connection_error"
        ) from None
    except (OSError, InvalidHandshake, TimeoutError) as exc:
        raise PlatformError(f"cannot open a websocket to the runner: {exc}", "runner_connection_error") from None

    await send(
        {
            "type": "websocket.accept",
            "subprotocol": upstream.subprotocol,
            "headers": [(b"x-fal-request-id", request_id.encode())],
        }
    )
    close_code = 1000

    async def caller_to_runner() -> None:
        nonlocal close_code
        while True:
            message = await receive()
            if message["type"] == "websocket.receive":
                data = message.get("text")
                await upstream.send(data if data is not None else message.get("bytes") or b"")
            elif message["type"] == "websocket.disconnect":
                close_code = int(message.get("code", 1000))
                await upstream.close(code=close_code if 1000 <= close_code < 5000 else 1000)
                return

    async def runner_to_caller() -> None:
        nonlocal close_code
        try:
            async for data in upstream:
                if isinstance(data, str):
                    await send({"type": "websocket.send", "text": data})
                else:
                    await send({"type": "websocket.send", "bytes": data})
        except ConnectionClosed:
            pass
        close_code = upstream.close_code or 1000
        reason = upstream.close_reason or ""
        with contextlib.suppress(Exception):
            await send({"type": "websocket.close", "code": close_code, "reason": reason})

    tasks = [asyncio.ensure_future(caller_to_runner()), asyncio.ensure_future(runner_to_caller())]
    try:
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        for task in done:
            error = task.exception()
            if error is not None and not isinstance(error, ConnectionClosed | OSError):
                raise error
    finally:
        for task in tasks:
            task.cancel()
        with contextlib.suppress(Exception):
            await upstream.close()
    return close_code


async def serve(gateway: Gateway, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
    """The websocket route: authorize, lease a runner, forward until either side closes."""
    request_id = new_request_id()
    path: str = scope["path"]
    raw_path: bytes = scope.get("raw_path") or path.encode()
    incoming = split_headers(scope["headers"])
    try:
        owner, _, rest = path.lstrip("/").partition("/")
        alias, _, sub = rest.partition("/")
        gapp = gateway.apps.get(alias) if owner == gateway.owner else None
        if gapp is None or not alias:
            raise PlatformError(f"Application '{owner}/{alias}' not found", status=404)
        caller = gateway.authorize(gapp, incoming, jwt_token(scope.get("query_string", b"")))
        raw_sub = raw_path.lstrip(b"/").partition(b"/")[2].partition(b"/")[2]
        query = runner_query(scope.get("query_string", b""))
        target = "/" + raw_sub.decode("latin-1") + ("?" + query if query else "")
        lease = await acquire(gapp, request_id, start_timeout(incoming.request_timeout, gapp))
    except PlatformError as exc:
        await refuse(scope, send, exc, request_id)
        return
    runner = lease.runner
    gateway.emit(RequestStarted(alias, request_id=request_id, runner=runner.id))
    started = time.monotonic()
    outcome: Outcome = "ok"
    status = 101
    try:
        headers = identity_headers(request_id, f"{owner}/{alias}/{sub}", caller.user if caller else None)
        await forward(
            scope,
            receive,
            send,
            host=runner.host,
            port=runner.port,
            holder=runner.holder,
            target=target,
            headers=headers + incoming.forward,
            request_id=request_id,
        )
    except PlatformError as exc:
        outcome, status = "error", exc.status
        await refuse(scope, send, exc, request_id)
    finally:
        await gapp.pool.release(lease, outcome)
        gateway.emit(
            RequestCompleted(
                alias,
                request_id=request_id,
                runner=runner.id,
                status_code=status,
                seconds=time.monotonic() - started,
            )
        )
