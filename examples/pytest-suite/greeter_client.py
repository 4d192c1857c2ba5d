"""The greeter's client, as an app team writes it: the code their tests check against faults.

It calls the app's sync URL and retries what fal says is safe to retry: 503 (no runner, or the runner
died before it answered), 429 (too many requests) and a connection that broke, with exponential
back-off and an ``Idempotency-Key`` so the app can tell a retry from a new request. A 504 is not
retried: the request may have run.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx

RETRY_STATUSES = frozenset({429, 503})


class GreeterError(Exception):
    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"greeter answered {status}: {body}")
        self.status = status
        self.body = body


def greet(client: httpx.Client, url: str, name: str, *, attempts: int = 5, backoff: float = 0.05) -> dict[str, Any]:
    key = str(uuid.uuid4())
    for attempt in range(1, attempts + 1):
        try:
            response = client.post(f"{url}/greet", json={"name": name}, headers={"Idempotency-Key": key})
        except httpx.TransportError:
            if attempt == attempts:
                raise
        else:
            if response.status_code == 200:
                data: dict[str, Any] = response.json()
                data["attempts"] = attempt
                return data
            if response.status_code not in RETRY_STATUSES or attempt == attempts:
                raise GreeterError(response.status_code, response.json())
        time.sleep(backoff * 2 ** (attempt - 1))
    raise AssertionError("unreachable")
