"""``?fal_webhook=``: fal's payload POSTed to the caller's URL when a queued request completes."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

from falemu.events import Notice
from falemu.gateway.queue_record import QueuedRequest

if TYPE_CHECKING:
    from falemu.gateway.app import Gateway

WEBHOOK_ATTEMPTS = 10


def webhook_payload(rec: QueuedRequest, body: bytes) -> dict[str, Any]:
    """fal's webhook body for a completed request whose result body is ``body``."""
    payload: dict[str, Any] = {"request_id": rec.id, "gateway_request_id": rec.id}
    status = rec.response_status or 0
    try:
        parsed: Any = json.loads(body) if body else None
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


async def post_webhook(gateway: Gateway, rec: QueuedRequest) -> None:
    """Deliver the webhook, retrying with backoff; a warning when every attempt failed."""
    assert rec.webhook is not None
    body = rec.response_body.data if not rec.response_body.in_file else await asyncio.to_thread(rec.response_body.read)
    data = json.dumps(webhook_payload(rec, body)).encode()
    delay = 0.5
    last = ""
    for attempt in range(1, WEBHOOK_ATTEMPTS + 1):
        try:
            status = await gateway.post_json(rec.webhook, data)
            if 200 <= status < 300:
                return
            last = f"status {status}"
        except Exception as exc:
            last = type(exc).__name__
        if attempt < WEBHOOK_ATTEMPTS:
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)
    gateway.emit(Notice(rec.alias, level="warning", message=f"webhook for request {rec.id} failed: {last}"))
