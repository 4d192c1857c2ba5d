"""The gateway: fal's sync and queue URLs in front of each app's runners.

URL layout (one port serves both APIs)::

    /{owner}/{app}[/{path}]                          sync: forwarded to a runner as-is
    /queue/{owner}/{app}[/{path}]           POST     queue submit
    /queue/{owner}/{app}/requests/{id}      GET      result
    /queue/{owner}/{app}/requests/{id}/status        GET  (?logs=true|false|1|0)
    /queue/{owner}/{app}/requests/{id}/status/stream GET  (SSE)
    /queue/{owner}/{app}/requests/{id}/cancel        PUT
    /_falemu/health                          GET     the gateway's own liveness

Other rooms of falemu (admin routes, the dashboard, the local CDN, the JS client proxy) are served on
the same port as *mounts*: :meth:`Gateway.mount` gives a path prefix (or one exact path) to an ASGI
app, and such requests never reach app routing. Mounted paths must not look like ``/{owner}/{app}``
of a served app: falemu's own prefixes start with ``/_falemu/`` (an owner cannot start with ``_``),
and owners ``queue`` and ``api`` are refused for the queue API and ``/api/fal/proxy``.

fal_client builds ``https://{FAL_QUEUE_RUN_HOST}/`` + ``owner/app``, so
``FAL_QUEUE_RUN_HOST=127.0.0.1:PORT/queue`` reaches the queue API. A request whose ``Host`` starts with
``queue.`` (``queue.localhost:PORT``) is a queue request too, without the prefix, as on fal.

The sync path is a plain ASGI handler, not a framework route: it reads the caller's headers once, reads
the whole request body (:mod:`falemu.gateway.body`: size and time limits, large bodies in a temporary
file), only then leases a runner, sends it the request and streams its response back. A caller that
hangs up before its runner answers is noticed at once: while it waits for a runner it is not sent to
one, and a request in progress is abandoned (499, the runner kept).
Served by falemu's own protocol (:mod:`falemu.gateway.server`, as ``falemu up`` does), most sync
requests skip the ASGI app altogether and take the fast path of :mod:`falemu.gateway.fastpath`, with
the same answers for about half the CPU.

Choices where fal's documents are silent (the queue and its results live in :mod:`falemu.queue`'s
store, see :mod:`falemu.gateway.queue` for what survives a stop):

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
import contextlib
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any

from falemu.clock import Clock, MonotonicClock
from falemu.config.settings import Settings
from falemu.events import BodyRecorder, Event, EventBus, RequestCompleted, RequestStarted, RunnerLog
from falemu.gateway import queue_api, ws
from falemu.gateway.apps import GatewayApp
from falemu.gateway.asgi import (
    Done,
    Message,
    Receive,
    Scope,
    Send,
    acquire,
    new_request_id,
    send_error,
    send_json,
    start_timeout,
)
from falemu.gateway.body import RequestBody, read_body
from falemu.gateway.errors import PlatformError, request_timeout_error
from falemu.gateway.headers import Incoming, identity_headers, response_headers, runner_hints, split_headers
from falemu.gateway.keys import Caller, KeyStore, looks_like_key
from falemu.gateway.queue import QueueManager
from falemu.gateway.upstream import Headers, UpstreamError, UpstreamPool, UpstreamResponse
from falemu.queue import QueueStore
from falemu.runtime.base import Runner
from falemu.scaling.pool import Lease, Outcome

if TYPE_CHECKING:
    from falemu.chaos.faults import RequestFaults, RequestPlan

QUEUE_PREFIX = "/queue"
NO_KEY = "No user found for Key ID and Secret"
_NO_TIMEOUT = contextlib.nullcontext()
MISSING_KEY = "Missing authorization header. Set FAL_KEY (`falemu env` prints one)."
BAD_TOKEN = "Invalid or expired token for this app: get a new one from POST https://rest.fal.ai/tokens/"

_NO_HEADERS: list[tuple[bytes, bytes]] = []
_HTTP_1 = frozenset({"1.1", "1.0"})

MountedApp = Callable[[Any, Any, Any], Awaitable[None]]  # an ASGI app


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
        queue_store: QueueStore | None = None,
    ) -> None:
        self.apps: dict[str, GatewayApp] = dict(apps)
        self.settings = settings
        self.owner = settings.owner
        self.events = events
        self.keys = keys
        self.clock: Clock = clock or MonotonicClock()
        self.queue = QueueManager(self, queue_store)
        self.max_body = settings.max_body_mb << 20  # bytes (falemu.gateway.body)
        self.body_timeout = settings.body_timeout
        self.fast_requests = 0  # sync requests served by the fast path (falemu.gateway.fastpath)
        self.recorder: BodyRecorder | None = None  # gets request and response bodies (the dashboard's history)
        self.closed = False
        self.faults: RequestFaults | None = None  # falemu.chaos, while a request fault is in effect
        self._upstream: UpstreamPool | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._webhook_client: Any = None
        self._mounts: list[tuple[str, bool, MountedApp]] = []  # (path, exact, app), longest first
        self.host_mounts: dict[str, MountedApp] = {}  # host (lower case, no port) -> app
        self._unsubscribe = events.subscribe(self._on_event)

    # -- mounts --------------------------------------------------------------------------------------
    def mount(self, path: str, app: MountedApp, *, exact: bool = False) -> None:
        """Serve ``path`` (a prefix ending in ``/``, or with ``exact`` one path) with another ASGI app.

        HTTP and websocket requests whose path is under a mount go to that app before any app routing
        (the longest mount wins). A prefix also takes its own path without the trailing slash.
        """
        if not path.startswith("/"):
            raise ValueError(f"a mount path starts with '/': {path!r}")
        self._mounts = [m for m in self._mounts if m[:2] != (path, exact)]
        self._mounts.append((path, exact, app))
        self._mounts.sort(key=lambda m: len(m[0]), reverse=True)

    def mounted(self, path: str) -> MountedApp | None:
        """The mounted app that serves ``path``, if any."""
        for prefix, exact, app in self._mounts:
            if exact:
                if path == prefix:
                    return app
            elif path.startswith(prefix) or path == prefix.rstrip("/"):
                return app
        return None

    def mount_host(self, host: str, app: MountedApp) -> None:
        """Serve every request whose ``Host`` (without port) is ``host`` with another ASGI app, before
        path mounts and app routing. An HTTPS proxy tunnel (CONNECT) to such a host is intercepted:
        see :meth:`tunnel_mode` and :mod:`falemu.gateway.tunnel`."""
        if not host or "/" in host:
            raise ValueError(f"a mounted host is a host name: {host!r}")
        self.host_mounts[host.lower().strip("[]")] = app

    def host_mounted(self, host: str | None) -> MountedApp | None:
        """The app mounted for a ``Host`` header's value (``name``, ``name:port``, ``[v6]:port``), if any."""
        if not host:
            return None
        host = host.lower()
        name = host[1 : host.find("]")] if host.startswith("[") else host.partition(":")[0]
        return self.host_mounts.get(name)

    def tunnel_mode(self, host: str, port: int) -> str:
        """What a ``CONNECT host:port`` gets: ``"intercept"`` (TLS served by the gateway) for a mounted
        host, else ``"passthrough"`` (bytes relayed to ``host:port``); ``"refuse"`` is the third answer."""
        return "intercept" if host.lower() in self.host_mounts else "passthrough"

    # -- plumbing ----------------------------------------------------------------------------------
    @property
    def upstream(self) -> UpstreamPool:
        if self._upstream is None:
            self._upstream = UpstreamPool()
        return self._upstream

    def emit(self, event: Event) -> None:
        self.events(event)

    def _on_event(self, event: Event) -> None:
        if not isinstance(event, RunnerLog) or not self.queue.wants_logs(event.runner):
            return  # most lines concern no queued request: no need to wake the loop for them
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
            self.queue.start()  # the requests a previous run left queued

    async def post_json(self, url: str, data: bytes) -> int:
        """POST a webhook payload; returns the status code."""
        import httpx

        if self._webhook_client is None:
            self._webhook_client = httpx.AsyncClient(timeout=30.0)
        resp = await self._webhook_client.post(url, content=data, headers={"content-type": "application/json"})
        status: int = resp.status_code
        return status

    def stopping(self) -> None:
        """The server is about to stop: hand no more queued requests to runners (on the gateway's loop)."""
        self.queue.pause()

    async def aclose(self) -> None:
        self.closed = True
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
        if kind == "lifespan":
            await self._lifespan(receive, send)
            return
        if self._loop is None:
            self._bind_loop()
        if kind == "http" and scope.get("http_version", "1.1") not in _HTTP_1:
            # HTTP/0.9, HTTP/2.0 or HTTP/1.2 in an HTTP/1 request line: the parser takes them, falemu does not
            version = f"HTTP/{scope.get('http_version')} is not supported: use HTTP/1.1"
            await send_error(send, PlatformError(version, "bad_request", status=400), new_request_id())
            return
        if self.host_mounts:
            host = next((value.decode("latin-1") for name, value in scope["headers"] if name == b"host"), None)
            by_host = self.host_mounted(host)
            if by_host is not None:
                await by_host(scope, receive, send)
                return
        if self._mounts:
            mounted = self.mounted(scope["path"])
            if mounted is not None:
                await mounted(scope, receive, send)
                return
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "websocket":
            await ws.serve(self, scope, receive, send)

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
        if raw_path[:6] == b"/queue" and raw_path[6:7] in (b"", b"/"):  # the prefix as sent, not decoded
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
            if gapp is not None and b"%" in raw_path and _encoded_slash(raw_path):
                gapp = None  # /local%2Fapp/x: the owner and app are path segments of their own, as sent
            if gapp is None or not alias:
                name = f"{owner}/{alias}" if alias else owner or "/"
                raise PlatformError(f"Application '{name}' not found", status=404)
            caller = self.authorize(gapp, incoming)
            user = caller.user if caller is not None else None
            if is_queue:
                await queue_api.route(self, scope, receive, send, gapp, sub, incoming, user, request_id, queue_prefix)
            else:
                # The runner sees the caller's path after /{owner}/{app}, byte for byte.
                raw_sub = raw_path.lstrip(b"/").partition(b"/")[2].partition(b"/")[2]
                target = b"/" + raw_sub
                if scope.get("query_string"):
                    target += b"?" + scope["query_string"]
                endpoint = f"{owner}/{alias}/{sub}"
                await self._sync(scope, receive, send, gapp, target, endpoint, incoming, user, request_id, "/" + sub)
        except PlatformError as exc:
            await send_error(send, exc, request_id)
        except Done:
            pass

    # -- auth ------------------------------------------------------------------------------------------
    def authorize(self, gapp: GatewayApp, incoming: Incoming, token: str | None = None) -> Caller | None:
        """The caller, by the app's auth mode; raises 401/403 as the platform does.

        ``token``: a websocket's ``fal_jwt_token``, which stands for a key when no Authorization is sent.
        """
        mode = gapp.config.effective_auth
        header = incoming.authorization
        if header is None:
            if token is None:
                if mode == "public":
                    return None
                raise PlatformError(MISSING_KEY, status=401)
            caller = self.keys.token_caller(token, gapp.config.alias)
            if caller is None:
                raise PlatformError(BAD_TOKEN, status=401)
        else:
            caller = self.keys.authenticate(header)
            if caller is None:
                if mode == "public" and not looks_like_key(header):
                    return None  # an Authorization of the app's own, not a fal key
                raise PlatformError(NO_KEY, status=401)
        if mode == "private" and not caller.may_call_private(self.owner):
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
        path: str = "/",
    ) -> None:
        method: str = scope["method"]
        wait = start_timeout(incoming.request_timeout, gapp)
        # The whole body first (falemu.gateway.body): a runner is leased only for a request that is all in.
        try:
            body = await read_body(
                receive, limit=self.max_body, timeout=self.body_timeout, declared=incoming.content_length
            )
        except PlatformError as exc:
            self._unserved(gapp, request_id, path, method, exc.status, exc.error_type, 0.0)
            raise
        except Done:
            self._unserved(gapp, request_id, path, method, 499, "client_disconnected", 0.0)
            raise
        received = time.monotonic()
        plan = self.faults.on_request(gapp.config.alias, request_id) if self.faults is not None else None
        if plan is not None and plan.answer is not None:  # falemu.chaos: the gateway answers, no runner
            body.close()
            status, error_type, detail = plan.answer
            self._unserved(gapp, request_id, path, method, status, error_type, received)
            raise PlatformError(detail, error_type, status=status)
        # Once the body is in, receive() returns only when the caller hangs up (or the answer is complete):
        # a request whose caller left is not sent to a runner, and one in progress is abandoned (499).
        gone = asyncio.ensure_future(receive())
        try:
            lease = gapp.pool.try_acquire(request_id, incoming.runner_hint)
            if lease is None:
                try:
                    lease = await _unless_gone(acquire(gapp, request_id, wait, incoming.runner_hint), gone)
                except PlatformError as exc:  # no runner took it (start timeout, failed starts): in the history too
                    self._unserved(gapp, request_id, path, method, exc.status, exc.error_type, received)
                    raise
                except Done:
                    self._unserved(gapp, request_id, path, method, 499, "client_disconnected", received)
                    raise
            await self._forward(
                scope, send, gapp, lease, target, endpoint, incoming, user, request_id, body, gone, path, received, plan
            )
        finally:
            body.close()
            if not gone.done():
                gone.cancel()

    def _unserved(
        self,
        gapp: GatewayApp,
        request_id: str,
        path: str,
        method: str,
        status: int,
        error_type: str | None,
        received: float,
    ) -> None:
        """A sync request that ended before any runner took it: in the history, with no runner."""
        self.emit(
            RequestCompleted(
                gapp.config.alias,
                request_id=request_id,
                runner="",
                status_code=status,
                seconds=0.0,
                endpoint=path,
                method=method,
                error_type=error_type,
                queue_wait=time.monotonic() - received if received else 0.0,
            )
        )

    async def _forward(
        self,
        scope: Scope,
        send: Send,
        gapp: GatewayApp,
        lease: Lease,
        target: bytes,
        endpoint: str,
        incoming: Incoming,
        user: str | None,
        request_id: str,
        body: RequestBody,
        gone: asyncio.Future[Message],
        path: str,
        received: float,
        plan: RequestPlan | None = None,
    ) -> None:
        """Send the request to the leased runner and its answer to the caller; give the runner back."""
        alias = gapp.config.alias
        method: str = scope["method"]
        runner = lease.runner
        started = time.monotonic()
        self.emit(
            RequestStarted(
                alias,
                request_id=request_id,
                runner=runner.id,
                endpoint=path,
                method=method,
                queue_wait=started - received,
            )
        )
        exchange = _Exchange()
        headers = identity_headers(request_id, endpoint, user)
        headers += incoming.forward
        whole = body.whole()
        recorder = self.recorder
        if recorder is not None and whole is not None:  # a body spooled to a file is not kept in the history
            recorder.request_body(request_id, incoming.forward, whole, incoming.store_io)
        forwarding = asyncio.ensure_future(
            self._exchange(scope, send, gapp, runner, target, headers, whole, body, request_id, exchange, plan)
        )
        try:
            try:
                await asyncio.wait((forwarding, gone), return_when=asyncio.FIRST_COMPLETED)
            except BaseException:
                forwarding.cancel()
                raise
            if not forwarding.done():  # the caller hung up first: stop talking to the runner
                forwarding.cancel()
                with contextlib.suppress(asyncio.CancelledError, Done, PlatformError):
                    await forwarding
                exchange.status = 499
                exchange.error_type = "client_disconnected"
                if exchange.outcome == "ok":
                    exchange.outcome = "error"  # the caller's doing, not the runner's: it stays
                raise Done()
            forwarding.result()
        finally:
            await gapp.pool.release(lease, exchange.outcome)
            self.emit(
                RequestCompleted(
                    alias,
                    request_id=request_id,
                    runner=runner.id,
                    status_code=exchange.status,
                    seconds=time.monotonic() - started,
                    endpoint=path,
                    method=method,
                    error_type=exchange.error_type,
                    queue_wait=started - received,
                )
            )

    async def _exchange(
        self,
        scope: Scope,
        send: Send,
        gapp: GatewayApp,
        runner: Runner,
        target: bytes,
        headers: Headers,
        whole: bytes | None,
        body: RequestBody,
        request_id: str,
        exchange: _Exchange,
        plan: RequestPlan | None = None,
    ) -> None:
        timeout = float(gapp.config.scaling.request_timeout) if gapp.config.scaling.request_timeout else None
        recorder = self.recorder
        response_started = False
        cut = plan.cut_after if plan is not None else None
        try:
            async with asyncio.timeout(timeout) if timeout is not None else _NO_TIMEOUT:
                if plan is not None and plan.delay:
                    await asyncio.sleep(plan.delay)  # falemu.chaos: latency
                method = scope["method"]
                if whole is not None:
                    resp = await self.upstream.request(
                        runner.host, runner.port, method, target, headers, whole, holder=runner.holder
                    )
                else:  # spooled to a file: sent in parts, with its length
                    spooled, size = body.stream(), body.size
                    resp = await self.upstream.request(
                        runner.host,
                        runner.port,
                        method,
                        target,
                        headers,
                        spooled,
                        content_length=size,
                        holder=runner.holder,
                    )
                status = exchange.status = resp.status
                if status == 503:
                    exchange.outcome = "replace"  # fal stops a runner that answers 503
                hints = runner_hints(resp.headers)
                if hints is not None:
                    gapp.pool.set_hints(runner.id, hints)
                try:
                    await send(
                        {
                            "type": "http.response.start",
                            "status": status,
                            "headers": response_headers(resp.headers, request_id.encode()),
                        }
                    )
                    response_started = True
                    if recorder is not None:
                        recorder.response_body(request_id, resp.headers, b"")
                    while (chunk := await resp.next_chunk()) is not None:
                        if cut is not None:
                            chunk = await _cut(resp, send, chunk, cut)
                            cut -= len(chunk)
                        if recorder is not None:
                            recorder.response_body(request_id, _NO_HEADERS, chunk)
                        if resp.at_end():  # the last part: send it as the end of the body
                            await resp.next_chunk()
                            break
                        await send({"type": "http.response.body", "body": chunk, "more_body": True})
                    await send({"type": "http.response.body", "body": chunk or b""})
                finally:
                    resp.release()
        except TimeoutError:
            exchange.outcome = "replace"
            exchange.status = 504
            exchange.error_type = "request_timeout"
            if response_started:
                raise Done() from None  # the caller sees the stream cut short
            raise request_timeout_error(timeout or 0) from None
        except UpstreamError as exc:
            exchange.outcome = "error" if exc.error_type == "runner_incomplete_response" else "replace"
            exchange.error_type = exc.error_type
            if response_started:
                raise Done() from None
            error = PlatformError(str(exc), exc.error_type)
            exchange.status = error.status
            raise error from None
        except OSError:
            # The caller went away while the response streamed.
            exchange.outcome = "error" if exchange.outcome == "ok" else exchange.outcome
            exchange.status = 499
            exchange.error_type = exchange.error_type or "client_disconnected"
            raise Done() from None

    # -- internal ------------------------------------------------------------------------------------
    async def _internal(self, path: str, send: Send, request_id: str) -> None:
        if path.rstrip("/") == "/_falemu/health":
            body = {"status": "ok", "owner": self.owner, "apps": sorted(self.apps)}
            await send_json(send, 200, body, request_id)
            return
        raise PlatformError("Not found", status=404)


async def _cut(resp: UpstreamResponse, send: Send, chunk: bytes, left: int) -> bytes:
    """falemu.chaos: the runner connection is cut once ``left`` more body bytes went to the caller."""
    if len(chunk) <= left:
        return chunk
    if left:
        await send({"type": "http.response.body", "body": chunk[:left], "more_body": True})
    resp.abort()
    raise UpstreamError("the runner connection was cut part-way (falemu chaos)", "runner_incomplete_response")


def _encoded_slash(raw_path: bytes) -> bool:
    """Whether the owner or app segment of a raw path holds an encoded ``/`` (``%2F``)."""
    owner, _, rest = raw_path.lstrip(b"/").partition(b"/")
    alias = rest.partition(b"/")[0]
    return b"%2f" in owner.lower() or b"%2f" in alias.lower()


class _Exchange:
    """What one sync request's exchange with its runner came to."""

    __slots__ = ("error_type", "outcome", "status")

    def __init__(self) -> None:
        self.status = 0
        self.outcome: Outcome = "ok"
        self.error_type: str | None = None


async def _unless_gone(waiting: Coroutine[Any, Any, Lease], gone: asyncio.Future[Message]) -> Lease:
    """The lease ``waiting`` gives, unless the caller hangs up first (then :class:`Done`, and no lease)."""
    task = asyncio.ensure_future(waiting)
    try:
        await asyncio.wait((task, gone), return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        task.cancel()
        raise
    if task.done():
        return task.result()
    task.cancel()  # the pool gives back a lease granted in the same instant
    with contextlib.suppress(asyncio.CancelledError, PlatformError):
        await task
    raise Done()
