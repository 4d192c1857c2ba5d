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

The queue's store (:mod:`falemu.queue`) is the source of truth for what must outlive the gateway: a
submit is acknowledged once its request is committed there, and every step of a request (started,
queued again, completed with its result) is written there. This manager keeps in memory only what a
running gateway needs: the requests not completed yet (with their tasks and status waiters) and the
ones completed in the last moments; a completed request is read back from the store when asked for.

Stopping (:meth:`QueueManager.pause`, then :meth:`QueueManager.aclose`): queued requests are no longer
handed to runners and stay queued in the store; requests in flight get their app's
``termination_grace_period_seconds`` to finish, and keep their results. A request still in flight after
that is cut off as if its runner died: queued again when fal's retry rules allow it (a broken
connection is retried unless ``x-fal-no-retry``, ``skip_retry_conditions`` or the attempt budget say
no), else completed with a ``runner_disconnected`` error. At the next start every request left queued
runs again, in its original order. A request that was in progress when falemu was killed (no clean
stop) is treated the same way at the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from falemu.errors import RunnerError
from falemu.events import Notice, QueueResumed, QueueStopped, RequestCompleted, RequestQueued, RequestStarted
from falemu.gateway.errors import PlatformError, start_timeout_error
from falemu.gateway.headers import identity_headers
from falemu.gateway.queue_attempt import Attempt, exchange, retry_budget, runner_error
from falemu.gateway.queue_logs import RequestLogs
from falemu.gateway.queue_order import QueueOrder
from falemu.gateway.queue_record import COMPLETED, IN_PROGRESS, IN_QUEUE, QueuedRequest, from_stored, to_stored
from falemu.gateway.queue_webhooks import post_webhook
from falemu.gateway.upstream import Headers, UpstreamError
from falemu.queue import EMPTY, RESULT_RETENTION, Body, QueueStore, Spool
from falemu.scaling.pool import Lease, RequestStartTimeout, RunnerPool

if TYPE_CHECKING:
    from falemu.gateway.app import Gateway

__all__ = ["COMPLETED", "IN_PROGRESS", "IN_QUEUE", "QueueManager", "QueuedRequest"]

MAX_ATTEMPTS = 10
LOW_PRIORITY = 1 << 48  # added to a low-priority request's seq: it sorts after every normal one
# Completed requests stay in memory (for late log lines and quick polls) at most this many, with at
# most this many bytes of results among them, for at most this long; the store has them all.
KEEP_FINISHED = 10_000
KEEP_FINISHED_BYTES = 32 * 1024 * 1024
KEEP_FINISHED_SECONDS = 60.0
RECORDED_HEAD = 64 * 1024  # what the request history gets of a body kept in a file (it keeps no more)
STOPPED_EARLY = "falemu up stopped while the request ran on its runner, and it may not run again"


class QueueManager:
    """Queued requests of every app of one gateway, kept in ``store`` (a throwaway one when None)."""

    def __init__(self, gateway: Gateway, store: QueueStore | None = None) -> None:
        self.gateway = gateway
        self._store = store
        self._own_store = False
        self._requests: dict[str, QueuedRequest] = {}  # not completed, or completed moments ago
        self._finished: OrderedDict[str, QueuedRequest] = OrderedDict()  # the latter, oldest first
        self._finished_bytes = 0
        self._order = QueueOrder()
        self._seq = itertools.count()
        self._logs = RequestLogs()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._started = False
        self._paused = False  # stopping: queued requests are no longer handed to runners
        self._closing = False
        self._stop_counts = {"finished": 0, "requeued": 0, "failed": 0}

    @property
    def store(self) -> QueueStore:
        if self._store is None:
            self._store = QueueStore.ephemeral()
            self._own_store = True
        return self._store

    # -- start: the requests a previous run left ------------------------------------------------------
    def start(self) -> None:
        """Queue again what the store holds for the apps served here (once, on the gateway's loop)."""
        if self._started:
            return
        self._started = True
        store = self.store
        store.on_error(self._store_error)
        self._seq = itertools.count(store.max_seq(LOW_PRIORITY) + 1)
        queued = failed = 0
        for stored in store.open_requests(self.gateway.apps):
            rec = from_stored(stored, self.gateway.owner, self.gateway.clock)
            if rec.status == IN_PROGRESS:
                # falemu was killed while this ran: its runner is gone, as if it had died.
                if not self._retry_allowed(rec, "connection_error"):
                    self._requests[rec.id] = rec
                    self._finish(rec, error=PlatformError(STOPPED_EARLY, "runner_disconnected"))
                    failed += 1
                    continue
                rec.status = IN_QUEUE
                store.requeued(rec.id, rec.attempts)
            self._requests[rec.id] = rec
            self._admit(rec)
            queued += 1
        if queued or failed:
            self.gateway.emit(QueueResumed("", queued=queued, failed=failed, folder=str(store.folder)))

    def _store_error(self, message: str) -> None:
        self.gateway.emit(Notice("falemu", level="warning", message=message))

    # -- lookups ---------------------------------------------------------------------------------
    def get(self, request_id: str, alias: str) -> QueuedRequest | None:
        rec = self._requests.get(request_id)
        if rec is not None and rec.expires is not None and rec.expires < time.time():
            return None  # its retention ended (the store drops it at its next purge)
        if rec is None:
            stored = self.store.get(request_id)
            if stored is None or stored.status != COMPLETED:
                return None
            rec = from_stored(stored, self.gateway.owner, self.gateway.clock)
        if rec.alias != alias:
            return None
        return rec

    def position(self, rec: QueuedRequest) -> int:
        return self._order.position(rec)

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

    def fetched(self, rec: QueuedRequest) -> None:
        """The result was fetched by id: the store keeps it an hour from now (written at most once a minute)."""
        now = time.time()
        if rec.expires is not None and rec.expires - now > RESULT_RETENTION - 60:
            return
        rec.expires = now + RESULT_RETENTION
        self.store.fetched(rec.id, now)

    # -- submit ------------------------------------------------------------------------------------
    def spool(self, request_id: str, limit: int | None) -> Spool:
        """Where a submit's body goes as it arrives: memory, then a file of the store past 64 KiB."""
        return Spool(self.store.bodies, f"{request_id}.in", limit=limit)

    async def submit(self, rec: QueuedRequest) -> int:
        """Store the request (acknowledged once committed) and queue it; returns its queue position."""
        self.start()
        try:
            await self.store.add(to_stored(rec, self.gateway.clock))
        except (Exception, asyncio.CancelledError) as exc:
            rec.body.remove()
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise PlatformError(f"the queue could not store the request: {exc}", "internal_error") from None
        self._requests[rec.id] = rec
        self._admit(rec)
        return self.position(rec)

    def _admit(self, rec: QueuedRequest) -> None:
        self._enqueue(rec)
        self._emit_queued(rec)
        recorder = self.gateway.recorder
        if recorder is not None:
            recorder.request_body(rec.id, rec.headers, _preview(rec.body), rec.store_io)
        if self._paused:
            return  # stopping: it stays queued in the store and runs at the next start
        task = asyncio.get_running_loop().create_task(self._run(rec), name=f"falemu-queue-{rec.id}")
        rec.task = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _emit_queued(self, rec: QueuedRequest) -> None:
        self.gateway.emit(
            RequestQueued(
                rec.alias, request_id=rec.id, queue_position=self.position(rec), endpoint=rec.path, method=rec.method
            )
        )

    def _enqueue(self, rec: QueuedRequest) -> None:
        rec.status = IN_QUEUE
        self._order.add(rec)
        rec.touch()

    def _dequeue(self, rec: QueuedRequest) -> None:
        self._order.remove(rec)

    def next_seq(self, priority: str) -> int:
        seq = next(self._seq)
        return seq + LOW_PRIORITY if priority == "low" else seq

    # -- running ------------------------------------------------------------------------------------
    async def _run(self, rec: QueuedRequest) -> None:
        try:
            await self._attempts(rec)
        except asyncio.CancelledError:
            # Only a stop cancels a request that is not completed (a caller's cancel completes it first).
            if rec.status == IN_QUEUE:
                self._dequeue(rec)  # it stays queued in the store and runs at the next start
            elif rec.status == IN_PROGRESS:
                self._cut_off(rec)
            raise
        except Exception as exc:  # a bug in falemu must not leave the request hanging
            self._dequeue(rec)
            self._finish(rec, error=PlatformError(f"internal error: {type(exc).__name__}", "internal_error"))

    def _cut_off(self, rec: QueuedRequest) -> None:
        """The stop ended this request's attempt before its runner answered: its runner is as good as dead."""
        if self._retry_allowed(rec, "connection_error"):
            rec.status = IN_QUEUE
            self.store.requeued(rec.id, rec.attempts)
            self._stop_counts["requeued"] += 1
            rec.touch()
        else:
            self._finish(rec, error=PlatformError(STOPPED_EARLY, "runner_disconnected"))
            self._stop_counts["failed"] += 1

    def _retry_allowed(self, rec: QueuedRequest, condition: str) -> bool:
        """fal's retry rules for an attempt that ended under ``condition`` (server_error, timeout, ...)."""
        gapp = self.gateway.apps.get(rec.alias)
        if gapp is None:
            return False
        config = gapp.config
        return (
            condition not in set(config.skip_retry_conditions)
            and not rec.no_retry
            and not rec.cancel_requested
            and rec.attempts < min(MAX_ATTEMPTS, retry_budget(config.retry_config).get(condition, MAX_ATTEMPTS))
        )

    async def _attempts(self, rec: QueuedRequest) -> None:
        gw = self.gateway
        gapp = gw.apps.get(rec.alias)
        if gapp is None:
            self._dequeue(rec)
            self._finish(rec, error=PlatformError("Application was removed", "runner_scheduling_failure"))
            return
        config = gapp.config
        while True:
            remaining: float | None = None
            if rec.start_deadline is not None:
                remaining = rec.start_deadline - gw.clock.now()
            if rec.priority == "low" and (remaining is None or remaining > 0):
                # Normal-priority requests go first, but not past this request's start deadline.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(remaining):
                        await self._order.normal_clear_event(rec.alias).wait()
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
            rec.runner_host = (lease.runner.host, lease.runner.port, lease.runner.holder)
            rec.started = time.time()
            self.store.started(rec.id, rec.attempts, lease.runner.id, rec.started)
            self._logs.attach(rec)
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

            timeout = float(config.scaling.request_timeout) if config.scaling.request_timeout else None
            spool = Spool(self.store.bodies, f"{rec.id}.out")
            attempt = Attempt()
            try:
                attempt = await exchange(gw, gapp, rec, lease, spool, timeout)
            except BaseException:
                spool.discard()
                raise
            finally:
                self._logs.detach(rec)
                await gapp.pool.release(lease, attempt.outcome)

            if attempt.retry_as is not None and self._retry_allowed(rec, attempt.retry_as):
                spool.discard()
                attempt.body.remove()  # the next attempt's answer takes its place
                self._enqueue(rec)
                self.store.requeued(rec.id, rec.attempts)
                self._emit_queued(rec)
                if self._paused:
                    self._dequeue(rec)
                    return  # stopping: the retry waits for the next start
                continue
            if attempt.failure is not None:
                spool.discard()
                self._finish(rec, error=attempt.failure)
            else:
                self._finish(rec, status=attempt.status, headers=attempt.headers, body=attempt.body)
            return

    async def _acquire_low(self, rec: QueuedRequest, pool: RunnerPool, remaining: float | None) -> Lease | None:
        return await self._order.acquire_low(rec, pool, remaining)

    def _finish(
        self,
        rec: QueuedRequest,
        *,
        status: int = 0,
        headers: Headers | None = None,
        body: Body = EMPTY,
        error: PlatformError | None = None,
    ) -> None:
        if rec.status == COMPLETED:
            return
        rec.finished = time.time()
        rec.expires = rec.finished + RESULT_RETENTION
        if error is not None:
            rec.response_status = error.status
            rec.response_headers = [(b"content-type", b"application/json"), *error.response_headers(rec.id)[2:]]
            rec.response_body = Body.of(error.encode())
            rec.error, rec.error_type = error.detail, error.error_type
        else:
            rec.response_status = status
            rec.response_headers = list(headers or [])
            rec.response_body = body
            if status >= 400:
                rec.error, rec.error_type = runner_error(status, rec.response_headers, body)
        rec.status = COMPLETED
        stored = to_stored(rec, self.gateway.clock)
        rec.body = EMPTY  # the input is not needed any more; the store removes its file
        rec.stored_logs = len(rec.logs)
        rec.touch()
        if self._paused and not self._closing and rec.started is not None:
            self._stop_counts["finished"] += 1
        self.store.completed(stored, on_commit=lambda: self._kept(rec))
        recorder = self.gateway.recorder
        if recorder is not None and rec.store_io:
            recorder.response_body(rec.id, rec.response_headers, _preview(rec.response_body))
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
        if rec.webhook and not self._closing:
            self._spawn(post_webhook(self.gateway, rec))

    def _kept(self, rec: QueuedRequest) -> None:
        """The result is committed: the request stays in memory a while (late log lines, quick polls)."""
        if self._closing or self._requests.get(rec.id) is not rec:
            return
        self._finished[rec.id] = rec
        self._finished_bytes += len(rec.response_body.data)
        now = time.time()
        while self._finished:
            oldest = next(iter(self._finished.values()))
            if (
                len(self._finished) <= KEEP_FINISHED
                and self._finished_bytes <= KEEP_FINISHED_BYTES
                and now - (oldest.finished or now) < KEEP_FINISHED_SECONDS
            ):
                break
            del self._finished[oldest.id]
            self._finished_bytes -= len(oldest.response_body.data)
            self._forget(oldest)

    def _forget(self, rec: QueuedRequest) -> None:
        """From now on the store alone has the completed request."""
        if self._requests.get(rec.id) is not rec:
            return
        if len(rec.logs) != rec.stored_logs and not self._closing:  # lines that came after the result
            rec.stored_logs = len(rec.logs)
            self.store.logs(rec.id, list(rec.logs), on_commit=lambda: self._forget(rec))
            return
        del self._requests[rec.id]

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
        host, port, holder = rec.runner_host
        path, _, _ = rec.target.partition(b"?")
        target = path.rstrip(b"/") + b"/cancel"
        headers = identity_headers(rec.id, rec.endpoint, rec.caller)
        with contextlib.suppress(UpstreamError, OSError, TimeoutError):
            async with asyncio.timeout(30):
                resp = await self.gateway.upstream.request(host, port, "POST", target, headers, b"", holder=holder)
                try:
                    await resp.read()
                finally:
                    resp.release()

    # -- logs ------------------------------------------------------------------------------------------
    def wants_logs(self, runner: str) -> bool:
        """Whether a queued request may take this runner's log lines now (callable from any thread)."""
        return self._logs.wants(runner)

    def runner_log(self, runner: str, line: str, stream: str, ts: float) -> None:
        self._logs.line(runner, line, stream, ts)

    # -- lifecycle -----------------------------------------------------------------------------------
    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def pause(self) -> None:
        """Stop handing queued requests to runners (falemu up is stopping); requests in flight go on."""
        if self._paused:
            return
        self._paused = True
        for rec in list(self._requests.values()):
            if rec.status == IN_QUEUE and rec.task is not None and not rec.task.done():
                rec.task.cancel()

    async def aclose(self) -> None:
        """Stop: requests in flight get their app's grace period, then the store has the rest."""
        self.pause()
        store = self._store
        if store is not None and store.durable:
            grace = max(
                (self._grace(rec.alias) for rec in self._requests.values() if rec.status == IN_PROGRESS), default=0.0
            )
            deadline = time.monotonic() + grace
            while (pending := [t for t in self._tasks if not t.done()]) and (left := deadline - time.monotonic()) > 0:
                # Requests in flight, and the webhooks of those that finish meanwhile.
                await asyncio.wait(pending, timeout=left, return_when=asyncio.FIRST_COMPLETED)
        self._closing = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if store is None:
            return
        for rec in self._requests.values():
            if rec.status == COMPLETED and len(rec.logs) != rec.stored_logs:
                store.logs(rec.id, list(rec.logs))
        await asyncio.to_thread(store.flush)
        if store.durable:
            counts = await asyncio.to_thread(store.counts)
            self.gateway.emit(
                QueueStopped(
                    "",
                    queued=sum(counts.queued.values()) + sum(counts.in_progress.values()),
                    requeued=self._stop_counts["requeued"],
                    failed=self._stop_counts["failed"],
                    finished=self._stop_counts["finished"],
                    results=counts.completed,
                    folder=str(store.folder),
                )
            )
        if self._own_store:
            await asyncio.to_thread(store.close)

    def _grace(self, alias: str) -> float:
        gapp = self.gateway.apps.get(alias)
        return float(gapp.config.scaling.termination_grace_period_seconds) if gapp is not None else 0.0


def _preview(body: Body) -> bytes:
    """A body for the request history: all of it when in memory, its start when in a file."""
    return body.data if not body.in_file else body.head(RECORDED_HEAD)
