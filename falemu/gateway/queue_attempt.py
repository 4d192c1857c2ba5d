"""One attempt of a queued request on a leased runner, and what its answer means under fal's rules.

A runner's 503 is retried and the runner replaced; a 504 is retried and the runner kept; a broken
connection or a ``request_timeout`` is retried and the runner replaced; any other answer is final.
``X-Fal-Needs-Retry: 1``/``0`` from the runner forces or prevents a retry. Whether a retry then
happens (``x-fal-no-retry``, ``skip_retry_conditions``, ``retry_config``, at most 10 attempts) is the
queue's call. The runner's answer streams into a :class:`~falemu.queue.Spool`, so a large result
goes to a file rather than memory.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from falemu.gateway.errors import PlatformError, request_timeout_error
from falemu.gateway.headers import identity_headers, runner_hints
from falemu.gateway.queue_record import QueuedRequest
from falemu.gateway.upstream import Headers, UpstreamError
from falemu.queue import EMPTY, Body, Spool
from falemu.scaling.pool import Lease, Outcome

if TYPE_CHECKING:
    from falemu.gateway.app import Gateway
    from falemu.gateway.apps import GatewayApp


@dataclass(slots=True)
class Attempt:
    """How an attempt ended: the pool's outcome for the runner, the retry condition it falls under
    (None: final), and either the runner's answer or the platform error to answer instead."""

    outcome: Outcome = "ok"
    retry_as: str | None = None  # server_error, timeout, connection_error, forced
    failure: PlatformError | None = None
    status: int = 0
    headers: Headers = field(default_factory=list)
    body: Body = EMPTY


async def exchange(
    gw: Gateway, gapp: GatewayApp, rec: QueuedRequest, lease: Lease, spool: Spool, timeout: float | None
) -> Attempt:
    """Send ``rec`` to the leased runner and read its answer (body into ``spool``) within ``timeout``."""
    attempt = Attempt()
    headers = identity_headers(rec.id, rec.endpoint, rec.caller) + rec.headers
    plan = gw.faults.on_request(rec.alias, rec.id) if gw.faults is not None else None
    try:
        async with asyncio.timeout(timeout):
            if plan is not None and plan.delay:
                await asyncio.sleep(plan.delay)
            if plan is not None and plan.answer is not None:
                raise _Injected(*plan.answer)
            resp = await gw.upstream.request(
                lease.runner.host,
                lease.runner.port,
                rec.method,
                rec.target,
                headers,
                rec.body.chunks() if rec.body.in_file else rec.body.data,
                content_length=rec.body.size if rec.body.in_file else None,
                holder=lease.runner.holder,
            )
            try:
                cut_after = plan.cut_after if plan is not None else None
                while (chunk := await resp.next_chunk()) is not None:
                    spool.write(chunk)
                    if cut_after is not None and spool.size > cut_after:
                        resp.abort()
                        raise UpstreamError(
                            "the runner connection was cut part-way (falemu chaos)", "runner_incomplete_response"
                        )
            finally:
                resp.release()
        attempt.body = spool.finish()
    except _Injected as answer:  # falemu.chaos: the platform answers instead of the runner
        attempt.retry_as = INJECTED_RETRY[answer.status]
        attempt.failure = PlatformError(answer.detail, answer.error_type, status=answer.status)
        return attempt
    except TimeoutError:
        attempt.outcome, attempt.retry_as = "replace", "timeout"
        attempt.failure = request_timeout_error(timeout or 0)
        return attempt
    except UpstreamError as exc:
        attempt.outcome = "error" if exc.error_type == "runner_incomplete_response" else "replace"
        attempt.retry_as = "connection_error"
        attempt.failure = PlatformError(str(exc), exc.error_type)
        return attempt
    status = attempt.status = resp.status
    attempt.headers = resp.headers
    hints = runner_hints(resp.headers)
    if hints is not None:
        gapp.pool.set_hints(lease.runner.id, hints)
    if status == 503:
        attempt.outcome, attempt.retry_as = "replace", "server_error"
    elif status == 504:
        attempt.outcome, attempt.retry_as = "error", "timeout"
    elif status >= 500:
        attempt.outcome = "error"
    needs = resp.header(b"x-fal-needs-retry")
    if needs is not None and needs.strip() == b"1":
        attempt.retry_as = attempt.retry_as or "forced"
    elif needs is not None and needs.strip() == b"0":
        attempt.retry_as = None
    return attempt


# The retry condition of a platform error a fault answers (falemu.chaos): 503 and 504 as fal's queue
# retries them, 429 re-queued ("the request waits and retries automatically").
INJECTED_RETRY = {503: "server_error", 504: "timeout", 429: "rate_limited"}


class _Injected(Exception):
    def __init__(self, status: int, error_type: str | None, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.error_type = error_type
        self.detail = detail


def retry_budget(retry_config: Any) -> dict[str, int]:
    """``retry_config = {server_error = {retries = 2}}`` -> at most 3 attempts for that condition."""
    budget: dict[str, int] = {}
    if isinstance(retry_config, dict):
        for cond, value in retry_config.items():
            if isinstance(value, dict) and isinstance(value.get("retries"), int):
                budget[str(cond)] = value["retries"] + 1
    return budget


def runner_error(status: int, headers: Headers, body: Body) -> tuple[str, str | None]:
    """``error`` and ``error_type`` of a runner's answer with status >= 400, for the status endpoint."""
    error = _error_text(body.head(4096), status)
    for key, value in headers:
        if key == b"x-fal-error-type":
            return error, value.decode("latin-1")
    if status == 499:
        return error, "client_cancelled"
    if status >= 500:
        return error, "runner_server_error"
    return error, None


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
