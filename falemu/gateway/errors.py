"""fal's platform errors: ``{"detail", "error_type"}`` bodies with ``X-Fal-Error-Type`` and fal's status codes."""

from __future__ import annotations

import json
from typing import Any

from falemu.gateway.upstream import Headers

# fal's documented error types and the status each comes with (docs: model-apis/request-errors).
ERROR_STATUS: dict[str, int] = {
    "request_timeout": 504,
    "startup_timeout": 504,
    "runner_scheduling_failure": 503,
    "runner_connection_timeout": 503,
    "runner_disconnected": 503,
    "runner_connection_refused": 503,
    "runner_connection_error": 503,
    "runner_incomplete_response": 502,
    "runner_server_error": 500,
    "client_disconnected": 499,
    "client_cancelled": 499,
    "bad_request": 400,
    "internal_error": 500,
}

REQUEST_TIMEOUT_TYPE = b"x-fal-request-timeout-type"


class PlatformError(Exception):
    """An error the gateway answers itself, as fal's platform would.

    ``error_type`` is None for errors fal answers without one (401 for keys, 404 for unknown apps).
    """

    def __init__(
        self,
        detail: str,
        error_type: str | None = None,
        *,
        status: int | None = None,
        headers: Headers | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.error_type = error_type
        if status is None:
            status = ERROR_STATUS.get(error_type or "", 500)
        self.status = status
        self.headers: Headers = list(headers or [])

    def body(self) -> dict[str, Any]:
        data: dict[str, Any] = {"detail": self.detail}
        if self.error_type is not None:
            data["error_type"] = self.error_type
        return data

    def response_headers(self, request_id: str) -> Headers:
        headers: Headers = [
            (b"content-type", b"application/json"),
            (b"x-fal-request-id", request_id.encode()),
        ]
        if self.error_type is not None:
            headers.append((b"x-fal-error-type", self.error_type.encode()))
        headers.extend(self.headers)
        return headers

    def encode(self) -> bytes:
        return json.dumps(self.body()).encode()


def start_timeout_error() -> PlatformError:
    """No runner took the request within its start timeout: final for fal_client (no retry)."""
    return PlatformError(
        "Request timed out while waiting for a runner",
        "request_timeout",
        status=504,
        headers=[(REQUEST_TIMEOUT_TYPE, b"user")],
    )


def request_timeout_error(seconds: float) -> PlatformError:
    """The runner did not answer within the app's ``request_timeout``."""
    return PlatformError(f"Request timed out after {seconds:g} seconds", "request_timeout", status=504)
