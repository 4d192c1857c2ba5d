"""The dashboard's JSON API under ``/_falemu/api/``, with its own OpenAPI document.

Served by the gateway as a mount (owners cannot start with ``_``, so no app URL can clash). Reads
come from :mod:`falemu.dashboard.views`; the Playground and replays call the apps through the
gateway's own queue and sync URLs, server-side, with the local user's key: no key reaches a page.

State-changing routes are POST and check the caller: a browser's ``Origin`` (or ``Sec-Fetch-Site``)
must be the gateway's own, and JSON bodies must say so in ``Content-Type``, so another site open in
the same browser cannot drive the Playground. When the gateway listens beyond loopback, callers from
other machines must bring a falemu key.

Live updates are server-sent events: ``/events`` ticks when anything changed (the page refetches what
it shows), ``/requests/{id}/live`` follows one request's state and log lines until it ends, and
``/runners/{id}/logs/live`` a runner's log.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse

from falemu.dashboard import models as m
from falemu.dashboard import views
from falemu.dashboard.records import Body
from falemu.dashboard.views import Board

PREFIX = "/_falemu/api"
MAX_DATA_URI = 16 * 1024 * 1024
SSE_INTERVAL = 0.5


class Caller:
    """How the API reaches the apps: the gateway's base URL, the user's key, TLS verification."""

    def __init__(self, base_url: str, api_key: str | None, verify: str | bool = True) -> None:
        self.base_url = base_url
        self.api_key = api_key
        self.verify = verify
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            import httpx

            self._client = httpx.AsyncClient(timeout=httpx.Timeout(3600.0, connect=10.0), verify=self.verify)
        return self._client

    def headers(self) -> dict[str, str]:
        return {"authorization": f"Key {self.api_key}"} if self.api_key else {}

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": m.Problem, "description": "bad input"},
    403: {"model": m.Problem, "description": "cross-site or non-local caller"},
    404: {"model": m.Problem, "description": "unknown app, request or runner"},
    415: {"model": m.Problem, "description": "not JSON"},
}


def create_api(
    board: Board,
    caller: Caller,
    *,
    allowed_key: Callable[[str], bool] = lambda header: False,
    capabilities: Callable[[], dict[str, Any]] | None = None,
) -> FastAPI:
    """The API app for ``board``; mount it on the gateway at ``/_falemu/api/``."""
    api = FastAPI(
        title="falemu dashboard API",
        version="1",
        description="Apps, runners, request history, analytics, errors, cost and the keep_alive advisor "
        "of a running falemu, as the dashboard at / shows them.",
        docs_url=None,
        redoc_url=None,
        openapi_url=f"{PREFIX}/openapi.json",
    )

    def local_only(request: Request) -> None:
        client = request.client
        host = client.host if client is not None else "127.0.0.1"
        if _is_loopback(host):
            return
        if allowed_key(request.headers.get("authorization", "")):
            return
        raise HTTPException(403, "the dashboard answers other machines only with a falemu key (Authorization)")

    def same_origin(request: Request) -> None:
        origin = request.headers.get("origin")
        site = request.headers.get("sec-fetch-site")
        host = request.headers.get("host", "")
        if site is not None and site not in ("same-origin", "none"):
            raise HTTPException(403, f"cross-site request refused (Sec-Fetch-Site: {site})")
        if origin is not None and origin != "null" and urlsplit(origin).netloc != host:
            raise HTTPException(403, f"request from another origin refused ({origin})")
        if origin == "null":
            raise HTTPException(403, "request from an opaque origin refused")

    def json_body(request: Request) -> None:
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind != "application/json":
            raise HTTPException(415, "send the body as application/json")

    reads = [Depends(local_only)]
    writes = [Depends(local_only), Depends(same_origin), Depends(json_body)]

    def app_or_404(app: str) -> Any:
        config = board.config(app)
        if config is None:
            raise HTTPException(404, f"no app {app!r} in this falemu")
        return config

    def request_or_404(request_id: str) -> Any:
        rec = board.history.request(request_id)
        if rec is None:
            raise HTTPException(404, f"no request {request_id!r} in the history")
        return rec

    @api.get(f"{PREFIX}/overview", response_model=m.Overview, dependencies=reads, responses=ERRORS)
    async def overview() -> dict[str, Any]:
        """Apps with their runners by state, requests in flight and waiting, and the history's size."""
        return views.overview(board)

    @api.get(f"{PREFIX}/apps/{{app}}", response_model=m.AppDetail, dependencies=reads, responses=ERRORS)
    async def app_detail(app: str) -> dict[str, Any]:
        """An app's configuration with the source of each value, and its runners."""
        return views.app_detail(board, app_or_404(app))

    @api.get(f"{PREFIX}/apps/{{app}}/openapi", response_model=m.OpenAPIView, dependencies=reads, responses=ERRORS)
    async def app_openapi(app: str) -> dict[str, Any]:
        """The app's /openapi.json (from a ready runner, else the last one a runner gave), or why there is none."""
        config = app_or_404(app)
        document = await asyncio.to_thread(board.openapi, config.alias)
        if document is None:
            return {"app": config.alias, "available": False, "message": views.openapi_missing(board, config.alias)}
        return {"app": config.alias, "available": True, "document": document}

    @api.get(f"{PREFIX}/runners", response_model=list[m.Runner], dependencies=reads, responses=ERRORS)
    async def runners(app: Annotated[str | None, Query(max_length=200)] = None) -> list[dict[str, Any]]:
        """Runners (live and recent) with fal's states, cold-start stages and time per state."""
        if app is not None:
            app = app_or_404(app).alias
        return views.runner_rows(board, app)

    @api.get(f"{PREFIX}/runners/{{runner}}/logs", response_model=m.Logs, dependencies=reads, responses=ERRORS)
    async def runner_logs(runner: str, tail: Annotated[int, Query(ge=0, le=5000)] = 500) -> dict[str, Any]:
        """A runner's last log lines (its whole life: start-up, requests, shutdown)."""
        rec = board.history.runner(runner)
        if rec is None:
            raise HTTPException(404, f"no runner {runner!r}")
        lines = rec.log_lines()
        return {"runner": runner, "lines": views.log_rows(lines[-tail:] if tail else []), "total": len(lines)}

    @api.get(f"{PREFIX}/requests", response_model=m.RequestList, dependencies=reads, responses=ERRORS)
    async def requests(
        app: Annotated[str | None, Query(max_length=200)] = None,
        endpoint: Annotated[str | None, Query(max_length=2000)] = None,
        status: Annotated[
            str | None, Query(max_length=20, description="200, 2xx, 4xx, 5xx, error, queued, running, done")
        ] = None,
        mode: Annotated[str | None, Query(pattern="^(sync|queue)$")] = None,
        runner: Annotated[str | None, Query(max_length=200)] = None,
        q: Annotated[str | None, Query(max_length=200, description="part of the request id or endpoint")] = None,
        before: Annotated[
            float | None, Query(description="received before this time (seconds since the epoch)")
        ] = None,
        older_than: Annotated[
            int | None, Query(ge=0, le=2**62, description="recorded before the request with this seq (paging)")
        ] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> dict[str, Any]:
        """The request history, newest first, with filters; a page is `limit` rows, the next one
        `older_than` the last row's `seq`."""
        return views.request_list(
            board,
            app=app,
            endpoint=endpoint,
            status=status,
            mode=mode,
            runner=runner,
            search=q,
            before=before,
            older_than=older_than,
            limit=limit,
        )

    @api.get(f"{PREFIX}/requests/{{request_id}}", response_model=m.RequestDetail, dependencies=reads, responses=ERRORS)
    async def request_detail(request_id: str) -> dict[str, Any]:
        """One request: timings, runner, input and output (as kept) and its logs."""
        rec = request_or_404(request_id)
        if rec.status is not None and rec.status >= 400:
            return views.error_detail(board, rec)
        return views.request_detail(board, rec)

    @api.get(f"{PREFIX}/requests/{{request_id}}/result", response_model=m.Result, dependencies=reads, responses=ERRORS)
    async def request_result(request_id: str) -> dict[str, Any]:
        """A queued request's full result from the queue API (the history keeps only the first 64 KiB)."""
        rec = request_or_404(request_id)
        if rec.state != "done":
            raise HTTPException(400, "the request has not finished")
        if rec.mode != "queue":
            return {"request_id": rec.id, "status": rec.status or 0, "output": views.body_view(rec.output)}
        url = f"{caller.base_url}/queue/{board.owner}/{rec.app}/requests/{rec.id}"
        resp = await caller.client.get(url, headers=caller.headers())
        body = Body(resp.content, len(resp.content), resp.headers.get("content-type", ""))
        return {"request_id": rec.id, "status": resp.status_code, "output": views.body_view(body)}

    @api.get(f"{PREFIX}/analytics", response_model=m.Analytics, dependencies=reads, responses=ERRORS)
    async def analytics(
        app: Annotated[str | None, Query(max_length=200)] = None,
        endpoint: Annotated[str | None, Query(max_length=2000)] = None,
        since: Annotated[float | None, Query(ge=0, le=1e11)] = None,
        until: Annotated[float | None, Query(ge=0, le=1e11)] = None,
    ) -> dict[str, Any]:
        """fal's Requests and Runners views: counts, success rate, startup and execution percentiles,
        cold boots, a series in automatic buckets and time per runner state."""
        if app is not None:
            app = app_or_404(app).alias
        return views.analytics_view(board, app=app, endpoint=endpoint, since=since, until=until)

    @api.get(f"{PREFIX}/errors", response_model=m.Errors, dependencies=reads, responses=ERRORS)
    async def errors(
        app: Annotated[str | None, Query(max_length=200)] = None,
        endpoint: Annotated[str | None, Query(max_length=2000)] = None,
        status: Annotated[int | None, Query(ge=100, le=599)] = None,
        error_type: Annotated[str | None, Query(max_length=100)] = None,
        since: Annotated[float | None, Query(ge=0, le=1e11)] = None,
        until: Annotated[float | None, Query(ge=0, le=1e11)] = None,
    ) -> dict[str, Any]:
        """Failed requests grouped by error type, status and endpoint; runners that failed to start."""
        if app is not None:
            app = app_or_404(app).alias
        return views.errors_view(
            board, app=app, endpoint=endpoint, status=status, error_type=error_type, since=since, until=until
        )

    @api.get(f"{PREFIX}/cost", response_model=m.Cost, dependencies=reads, responses=ERRORS)
    async def cost(
        app: Annotated[str | None, Query(max_length=200)] = None,
        since: Annotated[float | None, Query(ge=0, le=1e11)] = None,
        until: Annotated[float | None, Query(ge=0, le=1e11)] = None,
    ) -> dict[str, Any]:
        """Billed runner-seconds by machine type and state, times the price table."""
        if app is not None:
            app = app_or_404(app).alias
        return views.cost_view(board, app=app, since=since, until=until)

    @api.get(f"{PREFIX}/advisor/{{app}}", response_model=m.Advisor, dependencies=reads, responses=ERRORS)
    async def advisor(
        app: str,
        keep_alive: Annotated[str | None, Query(max_length=200, pattern=r"^\d{1,6}(,\d{1,6}){0,11}$")] = None,
        min_concurrency: Annotated[str | None, Query(max_length=100, pattern=r"^\d{1,3}(,\d{1,3}){0,7}$")] = None,
        max_multiplexing: Annotated[
            str | None, Query(max_length=100, pattern=r"^[1-9]\d{0,2}(,[1-9]\d{0,2}){0,7}$")
        ] = None,
        cold_start: Annotated[float | None, Query(ge=0, le=3600)] = None,
    ) -> dict[str, Any]:
        """The recorded arrivals replayed through the scaling policy for other keep_alive,
        min_concurrency and max_multiplexing values (comma-separated lists)."""
        config = app_or_404(app)
        return await asyncio.to_thread(
            views.advisor_view,
            board,
            config,
            keep_alive=_ints(keep_alive),
            min_concurrency=_ints(min_concurrency),
            max_multiplexing=_ints(max_multiplexing),
            cold_start=cold_start,
        )

    @api.get(f"{PREFIX}/report", response_model=m.Report, dependencies=reads, responses=ERRORS)
    async def report(
        since: Annotated[float | None, Query(ge=0, le=1e11)] = None,
        until: Annotated[float | None, Query(ge=0, le=1e11)] = None,
    ) -> dict[str, Any]:
        """What `falemu report --json` prints: per app, analytics, errors, cost and the advisor."""
        return await asyncio.to_thread(views.report, board, since=since, until=until)

    @api.get(f"{PREFIX}/capabilities", response_model=m.Capabilities, dependencies=reads, responses=ERRORS)
    async def caps() -> dict[str, Any]:
        """How the Playground hands files to apps: through the local CDN when it runs, else as data URIs."""
        found = capabilities() if capabilities is not None else {}
        return {"uploads": "data-uri", "max_data_uri_bytes": MAX_DATA_URI, **found}

    @api.post(
        f"{PREFIX}/playground/run",
        response_model=m.RunStarted,
        dependencies=writes,
        responses={**ERRORS, 502: {"model": m.Problem, "description": "the gateway could not be reached"}},
    )
    async def playground_run(run: m.PlaygroundRun) -> dict[str, Any]:
        """Run an endpoint through the gateway (the queue by default) with the local user's key."""
        config = app_or_404(run.app)
        endpoint = "/" + run.endpoint.lstrip("/")
        return await _call(caller, board.owner, config.alias, endpoint, run.method, run.input, run.mode)

    @api.post(
        f"{PREFIX}/uploads",
        response_model=m.Uploaded,
        dependencies=[Depends(local_only), Depends(same_origin)],
        responses={**ERRORS, 409: {"model": m.Problem, "description": "no local CDN runs"}},
        openapi_extra={"requestBody": {"content": {"*/*": {"schema": {"type": "string", "format": "binary"}}}}},
    )
    async def upload(request: Request, file_name: Annotated[str, Query(max_length=255)] = "upload") -> dict[str, Any]:
        """Put a file on the local CDN (as @fal-ai/client does, with the local key) and answer its URL."""
        found = capabilities() if capabilities is not None else {}
        initiate = found.get("initiate_url")
        if found.get("uploads") != "cdn" or not initiate:
            raise HTTPException(409, "no local CDN runs in this falemu: send the file inline as a data URI")
        data = await request.body()
        kind = request.headers.get("content-type") or "application/octet-stream"
        headers = {**caller.headers(), "content-type": "application/json"}
        try:
            started = await caller.client.post(
                f"{caller.base_url}{initiate}?storage_type=fal-cdn-v3",
                content=json.dumps({"file_name": file_name, "content_type": kind}).encode(),
                headers=headers,
            )
            if started.status_code != 200:
                raise HTTPException(400, f"the local CDN refused the upload ({started.status_code})")
            target = started.json()
            put = await caller.client.put(target["upload_url"], content=data, headers={"content-type": kind})
        except (ValueError, KeyError, OSError) as exc:
            raise HTTPException(400, f"the local CDN upload failed: {type(exc).__name__}") from None
        if put.status_code >= 300:
            raise HTTPException(400, f"the local CDN refused the bytes ({put.status_code})")
        return {"file_url": target["file_url"], "content_type": kind, "size": len(data)}

    @api.post(
        f"{PREFIX}/playground/stream",
        dependencies=writes,
        responses={
            200: {"content": {"text/event-stream": {"schema": {"type": "string"}}}, "description": "the app's events"},
            **ERRORS,
        },
        response_class=StreamingResponse,
    )
    async def playground_stream(run: m.PlaygroundRun) -> StreamingResponse:
        """Call a streaming endpoint through the gateway's sync URL and pass its events on as they come."""
        config = app_or_404(run.app)
        endpoint = "/" + run.endpoint.lstrip("/")
        url = f"{caller.base_url}/{board.owner}/{config.alias}{endpoint}"
        headers = {**caller.headers(), "content-type": "application/json", "accept": "text/event-stream"}
        body = None if run.method in ("GET", "DELETE") and run.input is None else json.dumps(run.input).encode()
        request = caller.client.build_request(run.method, url, content=body, headers=headers)
        try:
            resp = await caller.client.send(request, stream=True)
        except Exception as exc:
            raise HTTPException(502, f"the gateway could not be reached: {type(exc).__name__}") from None

        async def relay() -> AsyncIterator[bytes]:
            try:
                async for chunk in resp.aiter_raw():
                    yield chunk
            finally:
                await resp.aclose()

        return StreamingResponse(
            relay(),
            status_code=resp.status_code,
            media_type=resp.headers.get("content-type", "text/event-stream"),
            headers={"x-fal-request-id": resp.headers.get("x-fal-request-id", ""), "cache-control": "no-cache"},
        )

    @api.post(
        f"{PREFIX}/requests/{{request_id}}/replay",
        response_model=m.RunStarted,
        dependencies=writes,
        responses={**ERRORS, 409: {"model": m.Problem, "description": "the request's input was not kept"}},
    )
    async def replay(
        request_id: str, mode: Annotated[str | None, Query(pattern="^(sync|queue)$")] = None
    ) -> dict[str, Any]:
        """Send a recorded request again, with the input it had (queue or sync, as it was unless told)."""
        rec = request_or_404(request_id)
        if board.config(rec.app) is None:
            raise HTTPException(404, f"app {rec.app!r} is not served any more")
        if rec.input is None and rec.method in ("POST", "PUT", "PATCH"):
            raise HTTPException(409, "this request's input was not kept (X-Fal-Store-IO: 0, or evicted)")
        if rec.input is not None and rec.input.truncated:
            raise HTTPException(409, "this request's input was larger than the history keeps")
        payload: Any = None
        raw = rec.input.data if rec.input is not None else b""
        if raw:
            try:
                payload = json.loads(raw)
            except ValueError:
                raise HTTPException(409, "this request's input is not JSON; replay sends JSON only") from None
        return await _call(caller, board.owner, rec.app, rec.endpoint, rec.method, payload, mode or rec.mode)

    @api.get(
        f"{PREFIX}/events",
        dependencies=reads,
        responses={200: {"content": {"text/event-stream": {"schema": {"type": "string"}}}, "description": "SSE"}},
        response_class=StreamingResponse,
    )
    async def events(request: Request, once: Annotated[bool, Query()] = False) -> StreamingResponse:
        """Server-sent events: a tick whenever the history changed (at most twice a second)."""

        async def ticks() -> AsyncIterator[bytes]:
            last = -1
            quiet = 0
            while True:
                version = board.history.version
                if version != last:
                    last, quiet = version, 0
                    yield _sse({"version": version, "requests": len(board.history), "at": time.time()})
                    if once:
                        return
                quiet += 1
                if quiet % 30 == 0:
                    yield b": ping\n\n"  # a gone client shows when a write fails
                if await _gone(request, SSE_INTERVAL):
                    return

        return _stream(ticks())

    @api.get(
        f"{PREFIX}/requests/{{request_id}}/live",
        dependencies=reads,
        responses={
            200: {"content": {"text/event-stream": {"schema": {"type": "string"}}}, "description": "SSE"},
            404: ERRORS[404],
        },
        response_class=StreamingResponse,
    )
    async def request_live(request: Request, request_id: str) -> StreamingResponse:
        """Server-sent events following one request: its state and each new log line, until it ends."""
        rec = request_or_404(request_id)

        async def follow() -> AsyncIterator[bytes]:
            sent = 0
            state = ""
            while True:
                board.history.flush()  # the gateway's latest news of it
                logs = board.history.request_logs(rec) if rec.runner else []
                if rec.state != state or len(logs) > sent:
                    state = rec.state
                    new = views.log_rows(logs[sent:])
                    sent = len(logs)
                    yield _sse({**views.request_row(rec), "logs": new})
                if rec.state == "done":
                    await asyncio.sleep(views_grace())
                    logs = board.history.request_logs(rec)
                    if len(logs) > sent:
                        yield _sse({**views.request_row(rec), "logs": views.log_rows(logs[sent:])})
                    yield b"event: done\ndata: {}\n\n"
                    return
                if await _gone(request, 0.2):
                    return

        return _stream(follow())

    @api.get(
        f"{PREFIX}/runners/{{runner}}/logs/live",
        dependencies=reads,
        responses={
            200: {"content": {"text/event-stream": {"schema": {"type": "string"}}}, "description": "SSE"},
            404: ERRORS[404],
        },
        response_class=StreamingResponse,
    )
    async def runner_live(request: Request, runner: str) -> StreamingResponse:
        """Server-sent events with a runner's new log lines as they come."""
        rec = board.history.runner(runner)
        if rec is None:
            raise HTTPException(404, f"no runner {runner!r}")

        async def follow() -> AsyncIterator[bytes]:
            last = rec.logs[-1][0] if rec.logs else 0.0
            seen_at_last = sum(1 for ts, _, _ in rec.logs if ts == last)
            quiet = 0
            while True:
                lines = rec.log_lines(since=last)
                skip = seen_at_last if lines and lines[0][0] == last else 0
                new = lines[skip:]
                if new:
                    yield _sse({"lines": views.log_rows(new)})
                    last = new[-1][0]
                    seen_at_last = sum(1 for ts, _, _ in lines if ts == last)
                if rec.stopped_at is not None and not new:
                    yield b"event: done\ndata: {}\n\n"
                    return
                if not new:
                    quiet += 1
                    if quiet % 30 == 0:
                        yield b": ping\n\n"
                if await _gone(request, SSE_INTERVAL):
                    return

        return _stream(follow())

    @api.exception_handler(HTTPException)
    async def problem(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"detail": str(exc.detail)}, status_code=exc.status_code)

    return api


def views_grace() -> float:
    return 1.0  # log lines of a finished request may still be on their way (log followers lag a little)


async def _call(
    caller: Caller, owner: str, alias: str, endpoint: str, method: str, payload: Any, mode: str
) -> dict[str, Any]:
    import httpx

    body = None if method in ("GET", "DELETE") and payload is None else json.dumps(payload).encode()
    headers = {**caller.headers(), "content-type": "application/json"}
    try:
        if mode == "queue":
            if method != "POST":
                raise HTTPException(400, "the queue takes POST requests only: use mode sync")
            resp = await caller.client.post(
                f"{caller.base_url}/queue/{owner}/{alias}{endpoint}", content=body, headers=headers
            )
            data = _json(resp.content)
            if resp.status_code != 200 or not isinstance(data, dict) or "request_id" not in data:
                detail = data.get("detail") if isinstance(data, dict) else resp.text[:500]
                raise HTTPException(400, f"the queue refused the request ({resp.status_code}): {detail}")
            return {"request_id": str(data["request_id"]), "mode": "queue", "state": "queued"}
        resp = await caller.client.request(
            method, f"{caller.base_url}/{owner}/{alias}{endpoint}", content=body, headers=headers
        )
    except httpx.InvalidURL as exc:
        raise HTTPException(400, f"not a URL path: {exc}") from None
    except httpx.HTTPError as exc:
        raise HTTPException(502, f"the gateway could not be reached: {type(exc).__name__}") from None
    output = Body(resp.content, len(resp.content), resp.headers.get("content-type", ""))
    return {
        "request_id": resp.headers.get("x-fal-request-id", ""),
        "mode": "sync",
        "status": resp.status_code,
        "state": "done",
        "output": views.body_view(output),
    }


def _json(data: bytes) -> Any:
    try:
        return json.loads(data)
    except ValueError:
        return None


def _ints(text: str | None) -> list[int] | None:
    return None if not text else [int(x) for x in text.split(",") if x.strip()]


def _sse(data: Any) -> bytes:
    return b"data: " + json.dumps(data, default=str).encode() + b"\n\n"


def _stream(body: AsyncIterator[bytes]) -> StreamingResponse:
    return StreamingResponse(
        body, media_type="text/event-stream", headers={"cache-control": "no-cache", "x-accel-buffering": "no"}
    )


async def _gone(request: Request, seconds: float) -> bool:
    """Wait ``seconds``; True when the client went away (Starlette also cancels the stream then)."""
    await asyncio.sleep(seconds)
    return False


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host in ("localhost", "testclient")


Mounted = Callable[[Any, Any, Any], Awaitable[None]]
