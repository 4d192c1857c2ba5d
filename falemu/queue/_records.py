"""What the queue store keeps of one request: what was submitted, where it stands, and its result."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from falemu.queue._body import EMPTY, Body

IN_QUEUE = "IN_QUEUE"
IN_PROGRESS = "IN_PROGRESS"
COMPLETED = "COMPLETED"

Headers = list[tuple[bytes, bytes]]


@dataclass(slots=True)
class StoredRequest:
    """One queued request as stored. Times are wall-clock seconds (``time.time()``)."""

    id: str
    app: str  # the app's alias
    seq: int  # queue order within the app (low priority ones carry a large offset)
    method: str
    target: bytes  # path + query for the runner
    endpoint: str
    headers: Headers
    base_url: str
    submitted_at: float
    caller: str | None = None
    priority: str = "normal"
    no_retry: bool = False
    runner_hint: str | None = None
    start_deadline: float | None = None
    webhook: str | None = None
    store_io: bool = True  # False: the caller asked that input and output stay out of request history
    body: Body = EMPTY
    status: str = IN_QUEUE
    attempts: int = 0
    runner: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    result: StoredResult | None = None
    logs: list[dict[str, Any]] = field(default_factory=list)
    expires_at: float | None = None  # when a completed request's result is dropped


@dataclass(slots=True)
class StoredResult:
    """A completed request's answer, as the result endpoint gives it back."""

    status: int
    headers: Headers
    body: Body = EMPTY
    error: str | None = None
    error_type: str | None = None


def headers_to_json(headers: Headers) -> list[list[str]]:
    return [[k.decode("latin-1"), v.decode("latin-1")] for k, v in headers]


def headers_from_json(data: list[list[str]]) -> Headers:
    return [(k.encode("latin-1"), v.encode("latin-1")) for k, v in data]


def dump_headers(headers: Headers) -> str:
    return json.dumps(headers_to_json(headers))


def load_headers(text: str | None) -> Headers:
    return headers_from_json(json.loads(text)) if text else []
