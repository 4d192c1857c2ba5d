"""One queued request as the gateway runs it, and its translation to and from the queue's store.

:class:`QueuedRequest` carries what the store keeps (:class:`~falemu.queue.StoredRequest`) plus what
only a running gateway has: the task running it, the runner it is on, status waiters. Times are
wall-clock seconds, so they mean the same after a restart; ``start_deadline`` is on the gateway's
clock and becomes a wall-clock time in the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

from falemu.clock import Clock
from falemu.gateway.upstream import Headers
from falemu.queue import COMPLETED, EMPTY, IN_PROGRESS, IN_QUEUE, Body, StoredRequest, StoredResult

__all__ = ["COMPLETED", "IN_PROGRESS", "IN_QUEUE", "QueuedRequest", "from_stored", "to_stored"]


@dataclass(eq=False)
class QueuedRequest:
    id: str
    alias: str
    owner: str
    method: str
    target: bytes  # path + query for the runner
    endpoint: str  # x-fal-endpoint: owner/app/path
    headers: Headers
    body: Body
    caller: str | None
    base_url: str  # .../{owner}/{app}/requests/{id}
    seq: int
    no_retry: bool = False
    priority: str = "normal"
    runner_hint: str | None = None  # X-Fal-Runner-Hint: a runner that reported it is preferred
    start_deadline: float | None = None  # on the gateway's clock
    webhook: str | None = None
    store_io: bool = True  # X-Fal-Store-IO: 0 keeps input and output out of the dashboard's history
    status: str = IN_QUEUE
    attempts: int = 0
    submitted: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    runner: str | None = None
    runner_host: tuple[str, int, int] | None = None  # host, port, holder of the runner it ran on
    logs: list[dict[str, Any]] = field(default_factory=list)
    stored_logs: int = 0  # how many of ``logs`` the store has
    response_status: int | None = None
    response_headers: Headers = field(default_factory=list)
    response_body: Body = EMPTY
    error: str | None = None
    error_type: str | None = None
    expires: float | None = None  # when the store drops the completed request
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


def to_stored(rec: QueuedRequest, clock: Clock) -> StoredRequest:
    deadline = None
    if rec.start_deadline is not None:
        deadline = time.time() + (rec.start_deadline - clock.now())
    result = None
    if rec.status == COMPLETED:
        result = StoredResult(
            status=rec.response_status or 0,
            headers=rec.response_headers,
            body=rec.response_body,
            error=rec.error,
            error_type=rec.error_type,
        )
    return StoredRequest(
        id=rec.id,
        app=rec.alias,
        seq=rec.seq,
        method=rec.method,
        target=rec.target,
        endpoint=rec.endpoint,
        headers=rec.headers,
        base_url=rec.base_url,
        submitted_at=rec.submitted,
        caller=rec.caller,
        priority=rec.priority,
        no_retry=rec.no_retry,
        runner_hint=rec.runner_hint,
        start_deadline=deadline,
        webhook=rec.webhook,
        store_io=rec.store_io,
        body=rec.body,
        status=rec.status,
        attempts=rec.attempts,
        runner=rec.runner,
        started_at=rec.started,
        finished_at=rec.finished,
        result=result,
        logs=rec.logs,
    )


def from_stored(stored: StoredRequest, owner: str, clock: Clock) -> QueuedRequest:
    deadline = None
    if stored.start_deadline is not None:
        deadline = clock.now() + (stored.start_deadline - time.time())
    rec = QueuedRequest(
        id=stored.id,
        alias=stored.app,
        owner=owner,
        method=stored.method,
        target=stored.target,
        endpoint=stored.endpoint,
        headers=stored.headers,
        body=stored.body,
        caller=stored.caller,
        base_url=stored.base_url,
        seq=stored.seq,
        no_retry=stored.no_retry,
        priority=stored.priority,
        runner_hint=stored.runner_hint,
        start_deadline=deadline,
        webhook=stored.webhook,
        store_io=stored.store_io,
        status=stored.status,
        attempts=stored.attempts,
        submitted=stored.submitted_at,
        started=stored.started_at,
        finished=stored.finished_at,
        runner=stored.runner,
        logs=stored.logs,
        stored_logs=len(stored.logs),
    )
    if stored.result is not None:
        rec.response_status = stored.result.status
        rec.response_headers = stored.result.headers
        rec.response_body = stored.result.body
        rec.error = stored.result.error
        rec.error_type = stored.result.error_type
        rec.expires = stored.expires_at
    return rec
