"""The queue API's routes: submit, status (and its SSE stream), result and cancel."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING
from urllib.parse import unquote_plus

from falemu.gateway.apps import GatewayApp
from falemu.gateway.asgi import Done, Receive, Scope, Send, logs_param, send_json, server_host, start_timeout
from falemu.gateway.body import body_timeout_error, too_large_error
from falemu.gateway.errors import PlatformError
from falemu.gateway.headers import Incoming
from falemu.gateway.queue import COMPLETED, QueuedRequest
from falemu.queue import Body, BodyTooLarge, Spool

if TYPE_CHECKING:
    from falemu.gateway.app import Gateway

_RESULT_DROP = frozenset(
    {b"connection", b"keep-alive", b"transfer-encoding", b"content-length", b"x-fal-request-id", b"date", b"server"}
)


async def route(
    gateway: Gateway,
    scope: Scope,
    receive: Receive,
    send: Send,
    gapp: GatewayApp,
    sub: str,
    incoming: Incoming,
    user: str | None,
    request_id: str,
    prefix: str,
) -> None:
    method = scope["method"]
    parts = [p for p in sub.split("/") if p]
    if parts and parts[0] == "requests" and len(parts) >= 2 and method in ("GET", "PUT", "HEAD"):
        rec = gateway.queue.get(parts[1], gapp.config.alias)
        action = "/".join(parts[2:])
        if method == "PUT" and action == "cancel":
            if rec is None:
                await send_json(send, 404, {"status": "NOT_FOUND"}, parts[1])
                return
            code, word = gateway.queue.cancel(rec)
            await send_json(send, code, {"status": word}, rec.id)
            return
        if method in ("GET", "HEAD") and action in ("", "status", "status/stream"):
            if rec is None:
                raise PlatformError("Request not found", status=404)
            with_logs = logs_param(scope.get("query_string", b""))
            if action == "status":
                code, body = gateway.queue.status_body(rec, with_logs)
                await send_json(send, code, body, rec.id)
            elif action == "status/stream":
                await status_stream(gateway, send, rec, with_logs)
            else:
                await result(send, rec)
                gateway.queue.fetched(rec)
            return
        raise PlatformError(f"Method {method} not allowed here", "bad_request", status=405)
    if method != "POST":
        raise PlatformError("Queue requests are submitted with POST", "bad_request", status=405)
    await submit(gateway, scope, receive, send, gapp, sub, incoming, user, request_id, prefix)


async def submit(
    gateway: Gateway,
    scope: Scope,
    receive: Receive,
    send: Send,
    gapp: GatewayApp,
    sub: str,
    incoming: Incoming,
    user: str | None,
    request_id: str,
    prefix: str,
) -> None:
    webhook, rest_query = split_webhook(scope.get("query_string", b"").decode("latin-1"))
    limit = gateway.max_body
    if incoming.content_length is not None and incoming.content_length > limit:
        raise too_large_error(limit)  # before reading any of it (and before a 100 Continue)
    body = await read_spooled(receive, gateway.queue.spool(request_id, limit), gateway.body_timeout)
    owner, alias = gateway.owner, gapp.config.alias
    target = ("/" + sub).encode()
    if rest_query:
        target += b"?" + rest_query.encode("latin-1")
    time_to_start = start_timeout(incoming.request_timeout, gapp)
    scheme = scope.get("scheme", "http")
    host = incoming.host or server_host(scope)
    base_url = f"{scheme}://{host}{prefix}/{owner}/{alias}/requests/{request_id}"
    priority = "low" if incoming.priority == "low" else "normal"
    rec = QueuedRequest(
        id=request_id,
        alias=alias,
        owner=owner,
        method="POST",
        target=target,
        endpoint=f"{owner}/{alias}/{sub}",
        headers=incoming.forward,
        body=body,
        caller=user,
        base_url=base_url,
        seq=gateway.queue.next_seq(priority),
        no_retry=incoming.no_retry,
        priority=priority,
        runner_hint=incoming.runner_hint,
        start_deadline=(gateway.clock.now() + time_to_start) if time_to_start is not None else None,
        webhook=webhook,
        store_io=incoming.store_io,
    )
    position = await gateway.queue.submit(rec)
    await send_json(
        send,
        200,
        {"status": "IN_QUEUE", **rec.urls(), "queue_position": position, "gateway_request_id": rec.id},
        rec.id,
    )


async def read_spooled(receive: Receive, spool: Spool, timeout: float | None) -> Body:
    """The request body into ``spool`` (memory, then a file of the queue's store) as it arrives: 413
    past its limit, 408 when it stops arriving for ``timeout`` seconds, as on the sync path."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout) as deadline:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise Done()
                spool.write(message.get("body", b""))
                if not message.get("more_body", False):
                    return spool.finish()
                if timeout is not None:
                    deadline.reschedule(loop.time() + timeout)
    except BodyTooLarge as exc:
        raise too_large_error(exc.limit) from None
    except TimeoutError:
        spool.discard()
        raise body_timeout_error(timeout or 0) from None
    except BaseException:
        spool.discard()
        raise


async def result(send: Send, rec: QueuedRequest) -> None:
    if rec.status != COMPLETED:
        raise PlatformError("Request is still in progress", "bad_request", status=400)
    headers = [(k, v) for k, v in rec.response_headers if k not in _RESULT_DROP]
    headers.append((b"x-fal-request-id", rec.id.encode()))
    body = rec.response_body
    if not body.in_file:
        await send({"type": "http.response.start", "status": rec.response_status or 500, "headers": headers})
        await send({"type": "http.response.body", "body": body.data})
        return
    headers.append((b"content-length", str(body.size).encode()))
    try:
        chunks = body.chunks()
        first = await anext(chunks, b"")
    except FileNotFoundError:
        raise PlatformError("Request not found", status=404) from None  # purged meanwhile
    await send({"type": "http.response.start", "status": rec.response_status or 500, "headers": headers})
    await send({"type": "http.response.body", "body": first, "more_body": True})
    async for chunk in chunks:
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


async def status_stream(gateway: Gateway, send: Send, rec: QueuedRequest, with_logs: bool) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"text/event-stream"),
                (b"cache-control", b"no-cache"),
                (b"x-fal-request-id", rec.id.encode()),
            ],
        }
    )
    last = b""
    try:
        while True:
            version = rec.version
            _, body = gateway.queue.status_body(rec, with_logs)
            data = json.dumps(body).encode()
            if data != last:
                await send({"type": "http.response.body", "body": b"data: " + data + b"\n\n", "more_body": True})
                last = data
            if rec.status == COMPLETED:
                break
            await rec.changed(version, timeout=15.0)
        await send({"type": "http.response.body", "body": b""})
    except OSError:
        return


def split_webhook(query: str) -> tuple[str | None, str]:
    """``fal_webhook`` out of a raw query string; the rest goes to the runner byte for byte, still encoded."""
    webhook: str | None = None
    kept: list[str] = []
    for pair in query.split("&") if query else ():
        name = unquote_plus(pair.partition("=")[0])
        if name == "fal_webhook":
            if webhook is None:
                webhook = unquote_plus(pair.partition("=")[2])
            continue
        kept.append(pair)
    return webhook, "&".join(kept)
