"""fal's queue: submitted requests wait in FIFO order per app, run on a leased runner, and keep their
result, logs and metrics for the status and result endpoints.

Every queued request waits in :meth:`RunnerPool.acquire` at once, so the scaling controller sees the
whole backlog; the pool hands runners out in arrival order. ``X-Fal-Queue-Priority: low`` requests
wait until no normal-priority request of the app is queued.

Retries follow fal's queue rules: a runner's 503 is retried and the runner replaced; a 504 is retried
and the runner kept; a broken connection or a ``request_timeout`` is retried and the runner replaced;
any other answer is final. ``X-Fal-Needs-Retry: 1``/``0`` from the runner forces or prevents a
retry, ``x-fal-no-retry`` from the caller prevents it, the app's ``skip_retry_conditions`` and
``retry_config`` narrow it, and there are at most 10 attempts.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import datetime as dt
import itertools
import json
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from falemu.errors import RunnerError
from falemu.events import Notice, RequestCompleted, RequestQueued, RequestStarted
from falemu.gateway.errors import PlatformError, request_timeout_error, start_timeout_error
from falemu.gateway.headers import identity_headers, runner_hints
from falemu.gateway.upstream import Headers, UpstreamError
from falemu.scaling.pool import Lease, Outcome, RequestStartTimeout, RunnerPool

if TYPE_CHECKING:
    from falemu.gateway.app import Gateway

MAX_ATTEMPTS = 10
MAX_LOG_ENTRIES = 10_000
KEEP_FINISHED = 10_000
LOG_GRACE_SECONDS = 1.0  # a runner's lines this soon after a request ended still belong to it
WEBHOOK_ATTEMPTS = 10

IN_QUEUE = "IN_QUEUE"
IN_PROGRESS = "IN_PROGRESS"
COMPLETED = "COMPLETED"


@dataclass(eq=False)
class QueuedRequest:
    id: str
    alias: str
    owner: str
    method: str
    target: bytes  # path + query for the runner
    endpoint: str  # x-fal-endpoint: owner/app/path
    headers: Headers
    body: bytes
    caller: str | None
    base_url: str  # .../{owner}/{app}/requests/{id}
    seq: int
    no_retry: bool = False
    priority: str = "normal"
    runner_hint: str | None = None  # X-Fal-Runner-Hint: a runner that reported it is preferred
    start_deadline: float | None = None
    webhook: str | None = None
    store_io: bool = True  # X-Fal-Store-IO: 0 keeps input and output out of the dashboard's history
    status: str = IN_QUEUE
    attempts: int = 0
    submitted: float = field(default_factory=time.monotonic)
    started: float | None = None
    finished: float | None = None
    runner: str | None = None
    runner_host: tuple[str, int] | None = None
    logs: list[dict[str, Any]] = field(default_factory=list)
    response_status: int | None = None
    response_headers: Headers = field(default_factory=list)
    response_body: bytes = b""
    error: str | None = None
    error_type: str | None = None
    cancel_requested: bool = False
    task: asyncio.Task[None] | None = None
    version: int = 0
    waiters: list[asyncio.Future[None]] = field(default_factory=list)

    @property
    def path(self) -> str:
        """The endpoint after /{owner}/{app} (``endpoint`` is ``owner/app/path``)."""
        return "/" + self.endpoint.partition("/")[2].partition("/")[2]

    @property
    def status_url(self) -> str:
        return self.base_url + "/status"

    @property
    def cancel_url(self) -> str:
        return self.base_url + "/cancel"

    def urls(self) -> dict[str, str]:
        return {
            "request_id": self.id,
            "response_url": self.base_url,
            "status_url": self.status_url,
            "cancel_url": self.cancel_url,
        }

    def touch(self) -> None:
        self.version += 1
        waiters, self.waiters = self.waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    async def changed(self, since: int, timeout: float | None = None) -> None:
        if self.version != since:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiters.append(fut)
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await fut
        finally:
            if fut in self.waiters:  # timed out or cancelled: a long-lived stream must not pile them up
                self.waiters.remove(fut)


class QueueManager:
    """Queued requests of every app of one gateway."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self._requests: dict[str, QueuedRequest] = {}
        self._finished: OrderedDict[str, None] = OrderedDict()
        self._waiting: dict[str, list[int]] = {}  # alias -> sorted seqs of IN_QUEUE requests
        self._normal_waiting: dict[str, int] = {}
        self._normal_clear: dict[str, asyncio.Event] = {}  # set while no normal-priority request waits
        self._normal_arrived: dict[str, asyncio.Event] = {}  # set while one does
        self._seq = itertools.count()
        self._on_runner: dict[str, list[QueuedRequest]] = {}  # runner id -> requests whose logs it writes
        self._recent: dict[str, tuple[float, list[QueuedRequest]]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing = False

    # -- lookups ---------------------------------------------------------------------------------
    def get(self, request_id: str, alias: str) -> QueuedRequest | None:
        rec = self._requests.get(request_id)
        if rec is None or rec.alias != alias:
            return None
        return rec

    def position(self, rec: QueuedRequest) -> int:
        seqs = self._waiting.get(rec.alias, [])
        return bisect.bisect_left(seqs, rec.seq)

    def status_body(self, rec: QueuedRequest, with_logs: bool) -> tuple[int, dict[str, Any]]:
        body: dict[str, Any] = {"status": rec.status, **rec.urls()}
        if rec.status == IN_QUEUE:
            body["queue_position"] = self.position(rec)
            return 202, body
        body["logs"] = list(rec.logs) if with_logs else None
        if rec.status == IN_PROGRESS:
            return 202, body
        inference = (rec.finished - rec.started) if rec.started is not None and rec.finished is not None else None
        body["metrics"] = {"inference_time": inference} if inference is not None else {}
        if rec.error is not None:
            body["error"] = rec.error
        if rec.error_type is not None:
            body["error_type"] = rec.error_type
        return 200, body

    # -- submit ------------------------------------------------------------------------------------
    def submit(self, rec: QueuedRequest) -> int:
        self._requests[rec.id] = rec
        self._enqueue(rec)
        position = self.position(rec)
        self.gateway.emit(
            RequestQueued(rec.alias, request_id=rec.id, queue_position=position, endpoint=rec.path, method=rec.method)
        )
        recorder = self.gateway.recorder
        if recorder is not None:
            recorder.request_body(rec.id, rec.headers, rec.body, rec.store_io)
        task = asyncio.get_running_loop().create_task(self._run(rec), name=f"falemu-queue-{rec.id}")
        rec.task = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return position

    def _enqueue(self, rec: QueuedRequest) -> None:
        rec.status = IN_QUEUE
        bisect.insort(self._waiting.setdefault(rec.alias, []), rec.seq)
        if rec.priority != "low":
            self._normal_waiting[rec.alias] = self._normal_waiting.get(rec.alias, 0) + 1
            self._normal_event(rec.alias).clear()
            self._normal_present(rec.alias).set()
        rec.touch()

    def _dequeue(self, rec: QueuedRequest) -> None:
        seqs = self._waiting.get(rec.alias, [])
        i = bisect.bisect_left(seqs, rec.seq)
        if i < len(seqs) and seqs[i] == rec.seq:
            del seqs[i]
            if rec.priority != "low":
                left = self._normal_waiting.get(rec.alias, 1) - 1
                self._normal_waiting[rec.alias] = left
                if left <= 0:
                    self._normal_event(rec.alias).set()
                    self._normal_present(rec.alias).clear()

    def _normal_present(self, alias: str) -> asyncio.Event:
        event = self._normal_arrived.get(alias)
        if event is None:
            event = self._normal_arrived[alias] = asyncio.Event()
        if self._normal_waiting.get(alias, 0) > 0:
            event.set()
        return event

    def _normal_event(self, alias: str) -> asyncio.Event:
        event = self._normal_clear.get(alias)
        if event is None:
            event = self._normal_clear[alias] = asyncio.Event()
            event.set()
        return event

    def next_seq(self, priority: str) -> int:
        seq = next(self._seq)
        return seq + (1 << 48) if priority == "low" else seq

    # -- running ------------------------------------------------------------------------------------
    async def _run(self, rec: QueuedRequest) -> None:
        try:
            await self._attempts(rec)
        except asyncio.CancelledError:
            if rec.status != COMPLETED:
                self._dequeue(rec)
                self._finish(
                    rec,
                    error=PlatformError("Request was cancelled", "client_cancelled"),
                )
            raise
        except Exception as exc:  # a bug in falemu must not leave the request hanging
            self._dequeue(rec)
            self._finish(rec, error=PlatformError(f"internal error: {type(exc).__name__}", "internal_error"))

    async def _attempts(self, rec: QueuedRequest) -> None:
        gw = self.gateway
        gapp = gw.apps.get(rec.alias)
        if gapp is None:
            self._dequeue(rec)
            self._finish(rec, error=PlatformError("Application was removed", "runner_scheduling_failure"))
            return
        config = gapp.config
        skip = set(config.skip_retry_conditions)
        budget = _retry_budget(config.retry_config)
        while True:
            remaining: float | None = None
            if rec.start_deadline is not None:
                remaining = rec.start_deadline - gw.clock.now()
            if rec.priority == "low" and (remaining is None or remaining > 0):
                # Normal-priority requests go first, but not past this request's start deadline.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(remaining):
                        await self._normal_event(rec.alias).wait()
                if rec.start_deadline is not None:
                    remaining = rec.start_deadline - gw.clock.now()
            if remaining is not None and remaining <= 0:
                self._dequeue(rec)
                self._finish(rec, error=start_timeout_error())
                return
            try:
                if rec.priority == "low":
                    lease = await self._acquire_low(rec, gapp.pool, remaining)
                    if lease is None:
                        continue  # a normal-priority request arrived first: queue up behind it
                else:
                    lease = await gapp.pool.acquire(rec.id, start_timeout=remaining, hint=rec.runner_hint)
            except RequestStartTimeout:
                self._dequeue(rec)
                self._finish(rec, error=start_timeout_error())
                return
            except RunnerError as exc:
                self._dequeue(rec)
                self._finish(rec, error=PlatformError(exc.message, exc.error_type))
                return
            self._dequeue(rec)
            rec.attempts += 1
            rec.status = IN_PROGRESS
            rec.runner = lease.runner.id
            rec.runner_host = (lease.runner.host, lease.runner.port)
            rec.started = time.monotonic()
            self._attach(rec)
            rec.touch()
            gw.emit(
                RequestStarted(
                    rec.alias,
                    request_id=rec.id,
                    runner=lease.runner.id,
                    endpoint=rec.path,
                    method=rec.method,
                    mode="queue",
                    queue_wait=rec.started - rec.submitted,
                )
            )

            outcome: Outcome = "ok"
            retry_as: str | None = None  # the retry condition this attempt falls under
            failure: PlatformError | None = None
            status = 0
            body = b""
            resp_headers: Headers = []
            timeout = float(config.scaling.request_timeout) if config.scaling.request_timeout else None
            plan = gw.faults.on_request(rec.alias, rec.id) if gw.faults is not None else None
            try:
                headers = identity_headers(rec.id, rec.endpoint, rec.caller) + rec.headers
                try:
                    async with asyncio.timeout(timeout):
                        if plan is not None and plan.delay:
                            await asyncio.sleep(plan.delay)
                        if plan is not None and plan.answer is not None:
                            raise _Injected(*plan.answer)
                        resp = await gw.upstream.request(
                            lease.runner.host, lease.runner.port, rec.method, rec.target, headers, rec.body
                        )
                        try:
                            body = await resp.read()
                            if plan is not None and plan.cut_after is not None and len(body) > plan.cut_after:
                                resp.abort()
                                raise UpstreamError(
                                    "the runner connection was cut part-way (falemu chaos)",
                                    "runner_incomplete_response",
                                )
                        finally:
                            resp.release()
                    status, resp_headers = resp.status, resp.headers
                    hints = runner_hints(resp_headers)
                    if hints is not None:
                        gapp.pool.set_hints(lease.runner.id, hints)
                except _Injected as answer:  # falemu.chaos: the platform answers instead of the runner
                    retry_as = INJECTED_RETRY[answer.status]
                    failure = PlatformError(answer.detail, answer.error_type, status=answer.status)
                except TimeoutError:
                    outcome, retry_as = "replace", "timeout"
                    failure = request_timeout_error(timeout or 0)
                except UpstreamError as exc:
                    outcome = "error" if exc.error_type == "runner_incomplete_response" else "replace"
                    retry_as = "connection_error"
                    failure = PlatformError(str(exc), exc.error_type)
                else:
                    if status == 503:
                        outcome, retry_as = "replace", "server_error"
                    elif status == 504:
                        outcome, retry_as = "error", "timeout"
                    elif status >= 500:
                        outcome = "error"
                    needs = resp.header(b"x-fal-needs-retry")
                    if needs is not None and needs.strip() == b"1":
                        retry_as = retry_as or "forced"
                    elif needs is not None and needs.strip() == b"0":
                        retry_as = None
            finally:
                self._detach(rec)
                await gapp.pool.release(lease, outcome)

            retry = (
                retry_as is not None
                and retry_as not in skip
                and not rec.no_retry
                and not rec.cancel_requested
                and rec.attempts < min(MAX_ATTEMPTS, budget.get(retry_as, MAX_ATTEMPTS))
            )
            if retry:
                self._enqueue(rec)
                position = self.position(rec)
                gw.emit(
                    RequestQueued(
                        rec.alias, request_id=rec.id, queue_position=position, endpoint=rec.path, method=rec.method
                    )
                )
                continue
            if failure is not None:
                self._finish(rec, error=failure)
            else:
                self._finish(rec, status=status, headers=resp_headers, body=body)
            return

    async def _acquire_low(self, rec: QueuedRequest, pool: RunnerPool, remaining: float | None) -> Lease | None:
        """Wait for a runner unless a normal-priority request queues up meanwhile (then None)."""
        acquiring = asyncio.ensure_future(pool.acquire(rec.id, start_timeout=remaining, hint=rec.runner_hint))
        normal = asyncio.ensure_future(self._normal_present(rec.alias).wait())
        try:
            await asyncio.wait({acquiring, normal}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            # Cancelled (the request, or the gateway closing) after the pool granted the runner but
            # before this task resumed: nobody else holds that lease, so hand it back.
            if acquiring.done() and not acquiring.cancelled() and acquiring.exception() is None:
                await pool.release(acquiring.result(), "ok")
            raise
        finally:
            normal.cancel()
            if not acquiring.done():
                acquiring.cancel()
        try:
            return await acquiring
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise
            return None

    def _finish(
        self,
        rec: QueuedRequest,
        *,
        status: int = 0,
        headers: Headers | None = None,
        body: bytes = b"",
        error: PlatformError | None = None,
    ) -> None:
        if rec.status == COMPLETED:
            return
        rec.finished = time.monotonic()
        if error is not None:
            rec.response_status = error.status
            rec.response_headers = [(b"content-type", b"application/json"), *error.response_headers(rec.id)[2:]]
            rec.response_body = error.encode()
            rec.error, rec.error_type = error.detail, error.error_type
        else:
            rec.response_status = status
            rec.response_headers = list(headers or [])
            rec.response_body = body
            if status >= 400:
                rec.error = _error_text(body, status)
                runner_type = _header(rec.response_headers, b"x-fal-error-type")
                if runner_type is not None:
                    rec.error_type = runner_type.decode("latin-1")
                elif status == 499:
                    rec.error_type = "client_cancelled"
                elif status >= 500:
                    rec.error_type = "runner_server_error"
        rec.status = COMPLETED
        rec.body = b""  # the input is not needed any more; the result is kept for the result endpoint
        rec.touch()
        recorder = self.gateway.recorder
        if recorder is not None and rec.store_io:
            recorder.response_body(rec.id, rec.response_headers, rec.response_body)
        ran = rec.started is not None and rec.runner is not None
        begun = rec.started if rec.started is not None else rec.submitted
        seconds = rec.finished - begun
        self.gateway.emit(
            RequestCompleted(
                rec.alias,
                request_id=rec.id,
                runner=rec.runner or "",
                status_code=rec.response_status or 0,
                seconds=seconds,
                endpoint=rec.path,
                method=rec.method,
                mode="queue",
                error_type=rec.error_type,
                queue_wait=(begun - rec.submitted) if ran else seconds,
            )
        )
        self._finished[rec.id] = None
        while len(self._finished) > KEEP_FINISHED:
            old, _ = self._finished.popitem(last=False)
            self._requests.pop(old, None)
        if rec.webhook and not self._closing:
            self._spawn(self._post_webhook(rec))

    # -- cancel --------------------------------------------------------------------------------------
    def cancel(self, rec: QueuedRequest) -> tuple[int, str]:
        if rec.status == COMPLETED:
            return 400, "ALREADY_COMPLETED"
        rec.cancel_requested = True
        if rec.status == IN_QUEUE:
            # Removed from the queue now; the waiting task ends with CancelledError in pool.acquire.
            self._dequeue(rec)
            self._finish(rec, error=PlatformError("Request was cancelled", "client_cancelled"))
            if rec.task is not None:
                rec.task.cancel()
            return 202, "CANCELLATION_REQUESTED"
        self._spawn(self._cancel_on_runner(rec))
        return 202, "CANCELLATION_REQUESTED"

    async def _cancel_on_runner(self, rec: QueuedRequest) -> None:
        """fal tells the app with ``POST <endpoint>/cancel`` carrying the request's ``x-fal-request-id``."""
        if rec.runner_host is None:
            return
        host, port = rec.runner_host
        path, _, _ = rec.target.partition(b"?")
        target = path.rstrip(b"/") + b"/cancel"
        headers = identity_headers(rec.id, rec.endpoint, rec.caller)
        with contextlib.suppress(UpstreamError, OSError, TimeoutError):
            async with asyncio.timeout(30):
                resp = await self.gateway.upstream.request(host, port, "POST", target, headers, b"")
                try:
                    await resp.read()
                finally:
                    resp.release()

    # -- logs ------------------------------------------------------------------------------------------
    def _attach(self, rec: QueuedRequest) -> None:
        assert rec.runner is not None
        self._on_runner.setdefault(rec.runner, []).append(rec)
        self._recent.pop(rec.runner, None)

    def _detach(self, rec: QueuedRequest) -> None:
        runner = rec.runner
        if runner is None:
            return
        active = self._on_runner.get(runner, [])
        if rec in active:
            active.remove(rec)
        if not active:
            self._on_runner.pop(runner, None)
        now = time.monotonic()
        _, recent = self._recent.get(runner, (now, []))
        self._recent[runner] = (now, [*recent[-7:], rec])

    def wants_logs(self, runner: str) -> bool:
        """Whether a queued request may take this runner's log lines now (callable from any thread)."""
        return runner in self._on_runner or runner in self._recent

    def runner_log(self, runner: str, line: str, stream: str, ts: float) -> None:
        targets = self._on_runner.get(runner)
        if not targets:
            recent = self._recent.get(runner)
            if recent is None or time.monotonic() - recent[0] > LOG_GRACE_SECONDS:
                return
            targets = recent[1]
        entry: dict[str, Any] = {
            "timestamp": dt.datetime.fromtimestamp(ts, tz=dt.UTC).isoformat(),
            "message": line,
            "level": "STDERR" if stream == "stderr" else "STDOUT",
            "source": "USER",
            "labels": {},
        }
        for rec in targets:
            if len(rec.logs) < MAX_LOG_ENTRIES:
                rec.logs.append(entry)
                rec.touch()

    # -- webhooks --------------------------------------------------------------------------------------
    def webhook_payload(self, rec: QueuedRequest) -> dict[str, Any]:
        payload: dict[str, Any] = {"request_id": rec.id, "gateway_request_id": rec.id}
        status = rec.response_status or 0
        try:
            parsed: Any = json.loads(rec.response_body) if rec.response_body else None
            payload_error = None
        except ValueError:
            parsed, payload_error = None, "Response payload is not valid JSON"
        if 200 <= status < 300 and rec.error is None:
            payload["status"] = "OK"
        else:
            payload["status"] = "ERROR"
            payload["error"] = f"Invalid status code: {status}"
        payload["payload"] = parsed
        if payload_error is not None:
            payload["payload_error"] = payload_error
        return payload

    async def _post_webhook(self, rec: QueuedRequest) -> None:
        assert rec.webhook is not None
        data = json.dumps(self.webhook_payload(rec)).encode()
        delay = 0.5
        last = ""
        for attempt in range(1, WEBHOOK_ATTEMPTS + 1):
            try:
                status = await self.gateway.post_json(rec.webhook, data)
                if 200 <= status < 300:
                    return
                last = f"status {status}"
            except Exception as exc:
                last = type(exc).__name__
            if attempt < WEBHOOK_ATTEMPTS:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
        self.gateway.emit(Notice(rec.alias, level="warning", message=f"webhook for request {rec.id} failed: {last}"))

    # -- lifecycle -----------------------------------------------------------------------------------
    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def aclose(self) -> None:
        self._closing = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)


# The retry condition of a platform error a fault answers (falemu.chaos): 503 and 504 as fal's queue
# retries them, 429 re-queued ("the request waits and retries automatically").
INJECTED_RETRY = {503: "server_error", 504: "timeout", 429: "rate_limited"}


class _Injected(Exception):
    def __init__(self, status: int, error_type: str | None, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.error_type = error_type
        self.detail = detail


def _retry_budget(retry_config: Any) -> dict[str, int]:
    """``retry_config = {server_error = {retries = 2}}`` -> at most 3 attempts for that condition."""
    budget: dict[str, int] = {}
    if isinstance(retry_config, dict):
        for cond, value in retry_config.items():
            if isinstance(value, dict) and isinstance(value.get("retries"), int):
                budget[str(cond)] = value["retries"] + 1
    return budget


def _header(headers: Headers, name: bytes) -> bytes | None:
    for key, value in headers:
        if key == name:
            return value
    return None


def _error_text(body: bytes, status: int) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        text = body.decode("utf-8", "replace").strip()
        return text[:1000] or f"Invalid status code: {status}"
    if isinstance(data, dict) and "detail" in data:
        detail = data["detail"]
        return detail if isinstance(detail, str) else json.dumps(detail)
    return json.dumps(data)[:1000]
