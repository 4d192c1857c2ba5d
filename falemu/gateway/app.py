"""The gateway: fal's sync and queue URLs in front of each app's runners.

URL layout (one port serves both APIs)::

    /{owner}/{app}[/{path}]                          sync: forwarded to a runner as-is
    /queue/{owner}/{app}[/{path}]           POST     queue submit
    /queue/{owner}/{app}/requests/{id}      GET      result
    /queue/{owner}/{app}/requests/{id}/status        GET  (?logs=true|false|1|0)
    /queue/{owner}/{app}/requests/{id}/status/stream GET  (SSE)
    /queue/{owner}/{app}/requests/{id}/cancel        PUT
    /_falemu/health                          GET     the gateway's own liveness

fal_client builds ``https://{FAL_QUEUE_RUN_HOST}/`` + ``owner/app``, so
``FAL_QUEUE_RUN_HOST=127.0.0.1:PORT/queue`` reaches the queue API. A request whose ``Host`` starts with
``queue.`` (``queue.localhost:PORT``) is a queue request too, without the prefix, as on fal.

The sync path is a plain ASGI handler, not a framework route: it reads the caller's headers once,
leases a runner, streams the request body to it and its response back, and never holds a whole body.

Choices where fal's documents are silent (the queue keeps results in memory, the last 10,000):

- auth: ``public`` needs no key, but a fal-style key that does not check out is still 401; a
  missing key on a ``private``/``shared`` app is 401 ``{"detail": "Missing authorization header..."}``;
  an unknown or wrong key is 401 ``{"detail": "No user found for Key ID and Secret"}``; a valid key of
  another user is 403 on a ``private`` app and accepted on a ``shared`` one. Runners get the caller's
  user in ``x-fal-caller-user-id`` (absent for anonymous calls to public apps).
- submit answers 200; result before completion is 400 ``Request is still in progress``
  (``bad_request``); unknown ids are 404 on every queue route; cancel answers 202
  ``CANCELLATION_REQUESTED``, 400 ``ALREADY_COMPLETED`` or 404 ``NOT_FOUND``. A cancelled queued request
  is COMPLETED with ``error_type: client_cancelled`` and its result is 499.
- status of a failed request: ``error`` is the runner's ``detail`` (or body); ``error_type`` is the
  runner's ``X-Fal-Error-Type``, else ``client_cancelled`` for 499 and ``runner_server_error`` for 5xx.
- platform errors fal lists carry ``error_type`` and ``X-Fal-Error-Type``; 401/403/404 of the
  gateway itself carry only ``detail``, as fal's 401 does.
- a runner's log lines are attached to the queued requests in flight on it, and for one second after
  one ends (log readers lag the HTTP answer a little); with ``max_multiplexing`` > 1 every request in
  flight on the runner gets the line.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, MutableMapping
from typing import Any
from urllib.parse import parse_qs

from falemu.clock import Clock, MonotonicClock
from falemu.config.settings import Settings
from falemu.errors import RunnerError
from falemu.events import Event, EventBus, RequestCompleted, RequestStarted, RunnerLog
from falemu.gateway.apps import GatewayApp
from falemu.gateway.errors import PlatformError, request_timeout_error, start_timeout_error
from falemu.gateway.headers import Incoming, identity_headers, response_headers, split_headers
from falemu.gateway.keys import Caller, KeyStore
from falemu.gateway.queue import COMPLETED, QueuedRequest, QueueManager
from falemu.gateway.upstream import Headers, UpstreamError, UpstreamPool
from falemu.scaling.pool import Outcome, RequestStartTimeout

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

QUEUE_PREFIX = "/queue"
NO_KEY = "No user found for Key ID and Secret"
MISSING_KEY = "Missing authorization header. Set FAL_KEY (`falemu env` prints one)."
_TRUE = {"1", "true", "yes", "on"}


class _Done(Exception):
    """The response is already sent."""


class Gateway:
    """The gateway's ASGI app. ``apps`` may change while it runs (apps added or removed)."""

    def __init__(
        self,
        apps: Mapping[str, GatewayApp],
        *,
        settings: Settings,
        events: EventBus,
        keys: KeyStore,
        clock: Clock | None = None,
    ) -> None:
        self.apps: dict[str, GatewayApp] = dict(apps)
        self.settings = settings
        self.owner = settings.owner
        self.events = events
        self.keys = keys
        self.clock: Clock = clock or MonotonicClock()
        self.queue = QueueManager(self)
        self._upstream: UpstreamPool | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._webhook_client: Any = None
        self._unsubscribe = events.subscribe(self._on_event)

    # -- plumbing ----------------------------------------------------------------------------------
    @property
    def upstream(self) -> UpstreamPool:
        if self._upstream is None:
            self._upstream = UpstreamPool()
        return self._upstream

    def emit(self, event: Event) -> None:
        self.events(event)

    def _on_event(self, event: Event) -> None:
        if not isinstance(event, RunnerLog):
            return
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        if threading.get_ident() == self._loop_thread:
            self.queue.runner_log(event.runner, event.line, event.stream, event.ts)
        else:
            loop.call_soon_threadsafe(self.queue.runner_log, event.runner, event.line, event.stream, event.ts)

    def _bind_loop(self) -> None:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            self._loop_thread = threading.get_ident()

    async def post_json(self, url: str, data: bytes) -> int:
        """POST a webhook payload; returns the status code."""
        import httpx

        if self._webhook_client is None:
            self._webhook_client = httpx.AsyncClient(timeout=30.0)
        resp = await self._webhook_client.post(url, content=data, headers={"content-type": "application/json"})
        status: int = resp.status_code
        return status

    async def aclose(self) -> None:
        self._unsubscribe()
        await self.queue.aclose()
        if self._upstream is not None:
            await self._upstream.aclose()
            self._upstream = None
        if self._webhook_client is not None:
            await self._webhook_client.aclose()
            self._webhook_client = None

    # -- ASGI ----------------------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            if self._loop is None:
                self._bind_loop()
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        elif kind == "websocket":
            if self._loop is None:
                self._bind_loop()
            await self._websocket(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._bind_loop()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        request_id = new_request_id()
        path: str = scope["path"]
        raw_path: bytes = scope.get("raw_path") or path.encode()
        incoming = split_headers(scope["headers"])
        queue_prefix = ""
        if path == QUEUE_PREFIX or path.startswith(QUEUE_PREFIX + "/"):
            queue_prefix = QUEUE_PREFIX
            path = path[len(QUEUE_PREFIX) :]
            raw_path = raw_path[len(QUEUE_PREFIX) :]
        is_queue = bool(queue_prefix) or (incoming.host or "").lower().startswith("queue.")
        try:
            if path.startswith("/_falemu/"):
                await self._internal(path, send, request_id)
                return
            owner, _, rest = path.lstrip("/").partition("/")
            alias, _, sub = rest.partition("/")
            gapp = self.apps.get(alias) if owner == self.owner else None
            if gapp is None or not alias:
                name = f"{owner}/{alias}" if alias else owner or "/"
                raise PlatformError(f"Application '{name}' not found", status=404)
            caller = self._authorize(gapp, incoming)
            user = caller.user if caller is not None else None
            if is_queue:
                await self._queue_route(scope, receive, send, gapp, sub, incoming, user, request_id, queue_prefix)
            else:
                # The runner sees the caller's path after /{owner}/{app}, byte for byte.
                raw_sub = raw_path.lstrip(b"/").partition(b"/")[2].partition(b"/")[2]
                target = b"/" + raw_sub
                if scope.get("query_string"):
                    target += b"?" + scope["query_string"]
                endpoint = f"{owner}/{alias}/{sub}"
                await self._sync(scope, receive, send, gapp, target, endpoint, incoming, user, request_id)
        except PlatformError as exc:
            await _send_error(send, exc, request_id)
        except _Done:
            pass

    # -- auth ------------------------------------------------------------------------------------------
    def _authorize(self, gapp: GatewayApp, incoming: Incoming) -> Caller | None:
        """The caller, by the app's auth mode; raises 401/403 as the platform does."""
        mode = gapp.config.effective_auth
        header = incoming.authorization
        if header is None:
            if mode == "public":
                return None
            raise PlatformError(MISSING_KEY, status=401)
        caller = self.keys.authenticate(header)
        if caller is None:
            if mode == "public" and not _looks_like_key(header):
                return None  # an Authorization of the app's own, not a fal key
            raise PlatformError(NO_KEY, status=401)
        if mode == "private" and caller.user != self.owner:
            detail = f"User {caller.user} cannot access private app {self.owner}/{gapp.config.alias}"
            raise PlatformError(detail, status=403)
        return caller

    # -- sync ------------------------------------------------------------------------------------------
    async def _sync(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        gapp: GatewayApp,
        target: bytes,
        endpoint: str,
        incoming: Incoming,
        user: str | None,
        request_id: str,
    ) -> None:
        alias = gapp.config.alias
        start_timeout = _start_timeout(incoming.request_timeout, gapp)
        lease = await _acquire(gapp, request_id, start_timeout)
        runner = lease.runner
        self.emit(RequestStarted(alias, request_id=request_id, runner=runner.id))
        started = time.monotonic()
        outcome: Outcome = "ok"
        status = 0
        response_started = False
        timeout = float(gapp.config.scaling.request_timeout) if gapp.config.scaling.request_timeout else None
        rid = request_id.encode()
        try:
            headers = identity_headers(request_id, endpoint, user)
            headers += incoming.forward
            first = await receive()
            body: bytes | AsyncIterator[bytes]
            if first.get("more_body", False):
                body = _body_stream(first.get("body", b""), receive)
            else:
                body = first.get("body", b"")
            try:
                async with asyncio.timeout(timeout):
                    resp = await self.upstream.request(
                        runner.host,
                        runner.port,
                        scope["method"],
                        target,
                        headers,
                        body,
                        content_length=incoming.content_length,
                    )
                    status = resp.status
                    if status == 503:
                        outcome = "replace"  # fal stops a runner that answers 503
                    watcher: asyncio.Future[Message] | None = None
                    if isinstance(body, bytes) and resp.header(b"content-length") is None:
                        # An open-ended stream (SSE): stop reading the runner when the caller leaves.
                        watcher = asyncio.ensure_future(receive())
                        watcher.add_done_callback(lambda fut: None if fut.cancelled() else resp.abort())
                    try:
                        await send(
                            {
                                "type": "http.response.start",
                                "status": status,
                                "headers": response_headers(resp.headers, rid),
                            }
                        )
                        response_started = True
                        async for chunk in resp.iter_body():
                            await send({"type": "http.response.body", "body": chunk, "more_body": True})
                        await send({"type": "http.response.body", "body": b""})
                    except UpstreamError:
                        if watcher is not None and watcher.done():
                            status = 499
                            raise _Done() from None
                        raise
                    finally:
                        if watcher is not None and not watcher.done():
                            watcher.cancel()
                        resp.release()
            except TimeoutError:
                outcome = "replace"
                status = 504
                if response_started:
                    raise _Done() from None  # the caller sees the stream cut short
                raise request_timeout_error(timeout or 0) from None
            except UpstreamError as exc:
                outcome = "error" if exc.error_type == "runner_incomplete_response" else "replace"
                if response_started:
                    raise _Done() from None
                status = 503
                raise PlatformError(str(exc), exc.error_type) from None
            except OSError:
                # The caller went away while the response streamed.
                outcome = "error" if outcome == "ok" else outcome
                raise _Done() from None
        finally:
            await gapp.pool.release(lease, outcome)
            self.emit(
                RequestCompleted(
                    alias,
                    request_id=request_id,
                    runner=runner.id,
                    status_code=status,
                    seconds=time.monotonic() - started,
                )
            )

    # -- websockets -------------------------------------------------------------------------------------
    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        from falemu.gateway import ws

        request_id = new_request_id()
        path: str = scope["path"]
        raw_path: bytes = scope.get("raw_path") or path.encode()
        incoming = split_headers(scope["headers"])
        try:
            owner, _, rest = path.lstrip("/").partition("/")
            alias, _, sub = rest.partition("/")
            gapp = self.apps.get(alias) if owner == self.owner else None
            if gapp is None or not alias:
                raise PlatformError(f"Application '{owner}/{alias}' not found", status=404)
            caller = self._authorize(gapp, incoming)
            raw_sub = raw_path.lstrip(b"/").partition(b"/")[2].partition(b"/")[2]
            query = ws.runner_query(scope.get("query_string", b""))
            target = "/" + raw_sub.decode("latin-1") + ("?" + query if query else "")
            lease = await _acquire(gapp, request_id, _start_timeout(incoming.request_timeout, gapp))
        except PlatformError as exc:
            await ws.refuse(scope, send, exc, request_id)
            return
        runner = lease.runner
        self.emit(RequestStarted(alias, request_id=request_id, runner=runner.id))
        started = time.monotonic()
        outcome: Outcome = "ok"
        status = 101
        try:
            headers = identity_headers(request_id, f"{owner}/{alias}/{sub}", caller.user if caller else None)
            await ws.forward(
                scope,
                receive,
                send,
                host=runner.host,
                port=runner.port,
                target=target,
                headers=headers + incoming.forward,
                request_id=request_id,
            )
        except PlatformError as exc:
            outcome, status = "error", exc.status
            await ws.refuse(scope, send, exc, request_id)
        finally:
            await gapp.pool.release(lease, outcome)
            self.emit(
                RequestCompleted(
                    alias,
                    request_id=request_id,
                    runner=runner.id,
                    status_code=status,
                    seconds=time.monotonic() - started,
                )
            )

    # -- queue ------------------------------------------------------------------------------------------
    async def _queue_route(
        self,
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
            rec = self.queue.get(parts[1], gapp.config.alias)
            action = "/".join(parts[2:])
            if method == "PUT" and action == "cancel":
                if rec is None:
                    await _send_json(send, 404, {"status": "NOT_FOUND"}, parts[1])
                    return
                code, word = self.queue.cancel(rec)
                await _send_json(send, code, {"status": word}, rec.id)
                return
            if method in ("GET", "HEAD") and action in ("", "status", "status/stream"):
                if rec is None:
                    raise PlatformError("Request not found", status=404)
                with_logs = _logs_param(scope.get("query_string", b""))
                if action == "status":
                    code, body = self.queue.status_body(rec, with_logs)
                    await _send_json(send, code, body, rec.id)
                elif action == "status/stream":
                    await self._status_stream(send, rec, with_logs)
                else:
                    await self._result(send, rec)
                return
            raise PlatformError(f"Method {method} not allowed here", "bad_request", status=405)
        if method != "POST":
            raise PlatformError("Queue requests are submitted with POST", "bad_request", status=405)
        await self._submit(scope, receive, send, gapp, sub, incoming, user, request_id, prefix)

    async def _submit(
        self,
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
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        webhook = (query.pop("fal_webhook", None) or [None])[0]
        rest_query = "&".join(f"{k}={v}" for k, values in query.items() for v in values)
        body = await _read_body(receive)
        owner, alias = self.owner, gapp.config.alias
        target = ("/" + sub).encode()
        if rest_query:
            target += b"?" + rest_query.encode()
        start_timeout = _start_timeout(incoming.request_timeout, gapp)
        scheme = scope.get("scheme", "http")
        host = incoming.host or _server_host(scope)
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
            seq=self.queue.next_seq(priority),
            no_retry=incoming.no_retry,
            priority=priority,
            start_deadline=(self.clock.now() + start_timeout) if start_timeout is not None else None,
            webhook=webhook,
        )
        position = self.queue.submit(rec)
        await _send_json(
            send,
            200,
            {"status": "IN_QUEUE", **rec.urls(), "queue_position": position, "gateway_request_id": rec.id},
            rec.id,
        )

    async def _result(self, send: Send, rec: QueuedRequest) -> None:
        if rec.status != COMPLETED:
            raise PlatformError("Request is still in progress", "bad_request", status=400)
        headers = [(k, v) for k, v in rec.response_headers if k not in _RESULT_DROP]
        headers.append((b"x-fal-request-id", rec.id.encode()))
        await send({"type": "http.response.start", "status": rec.response_status or 500, "headers": headers})
        await send({"type": "http.response.body", "body": rec.response_body})

    async def _status_stream(self, send: Send, rec: QueuedRequest, with_logs: bool) -> None:
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
                _, body = self.queue.status_body(rec, with_logs)
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

    # -- internal ------------------------------------------------------------------------------------
    async def _internal(self, path: str, send: Send, request_id: str) -> None:
        if path.rstrip("/") == "/_falemu/health":
            body = {"status": "ok", "owner": self.owner, "apps": sorted(self.apps)}
            await _send_json(send, 200, body, request_id)
            return
        raise PlatformError("Not found", status=404)


_RESULT_DROP = frozenset(
    {b"connection", b"keep-alive", b"transfer-encoding", b"content-length", b"x-fal-request-id", b"date", b"server"}
)


def new_request_id() -> str:
    """A random (version 4) UUID as text, made without building a UUID object (the hot path)."""
    h = os.urandom(16).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"


def _looks_like_key(header: str) -> bool:
    from falemu.gateway.keys import parse_authorization

    return header.strip().lower().startswith("key ") or parse_authorization(header) is not None


def _start_timeout(header: str | None, gapp: GatewayApp) -> float | None:
    """Time-to-start bound: ``X-Fal-Request-Timeout`` wins over the app's ``request_start_timeout``."""
    if header:
        try:
            value = float(header)
        except ValueError:
            raise PlatformError(
                f"Invalid X-Fal-Request-Timeout header: {header!r}", "bad_request", status=400
            ) from None
        if value <= 1:
            raise PlatformError("X-Fal-Request-Timeout must be greater than 1 second", "bad_request", status=400)
        return value
    configured = gapp.config.scaling.request_start_timeout
    return float(configured) if configured else None


async def _acquire(gapp: GatewayApp, request_id: str, start_timeout: float | None) -> Any:
    try:
        return await gapp.pool.acquire(request_id, start_timeout=start_timeout)
    except RequestStartTimeout:
        raise start_timeout_error() from None
    except RunnerError as exc:
        raise PlatformError(exc.message, exc.error_type) from None


def _logs_param(query: bytes) -> bool:
    if not query:
        return False
    values = parse_qs(query.decode("latin-1")).get("logs")
    return values is not None and values[-1].strip().lower() in _TRUE


def _server_host(scope: Scope) -> str:
    server = scope.get("server") or ("127.0.0.1", 80)
    host, port = server[0], server[1]
    if ":" in str(host):
        host = f"[{host}]"
    return f"{host}:{port}"


async def _body_stream(first: bytes, receive: Receive) -> AsyncIterator[bytes]:
    if first:
        yield first
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise OSError("the caller disconnected while sending the request body")
        chunk = message.get("body", b"")
        if chunk:
            yield chunk
        if not message.get("more_body", False):
            return


async def _read_body(receive: Receive) -> bytes:
    parts: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Done()
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(parts)


async def _send_json(send: Send, status: int, body: Any, request_id: str, extra: Headers | None = None) -> None:
    data = json.dumps(body).encode()
    headers: Headers = [(b"content-type", b"application/json"), (b"x-fal-request-id", request_id.encode())]
    if extra:
        headers.extend(extra)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


async def _send_error(send: Send, exc: PlatformError, request_id: str) -> None:
    try:
        await send({"type": "http.response.start", "status": exc.status, "headers": exc.response_headers(request_id)})
        await send({"type": "http.response.body", "body": exc.encode()})
    except (OSError, RuntimeError):
        pass
