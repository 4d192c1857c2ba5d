"""Small ASGI helpers shared by the gateway's routes."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qs

from falemu.errors import RunnerError
from falemu.gateway.apps import GatewayApp
from falemu.gateway.errors import PlatformError, start_timeout_error
from falemu.gateway.upstream import Headers
from falemu.scaling.pool import Lease, RequestStartTimeout

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_TRUE = {"1", "true", "yes", "on"}


class Done(Exception):
    """The response is already sent (or the caller is gone): nothing more to answer."""


_RANDOM_BATCH = 256  # request ids drawn per call to the system's random source
_random_ids: list[str] = []  # list.pop is atomic: gateways on several threads may share it
os.register_at_fork(after_in_child=_random_ids.clear)  # a child must not repeat its parent's ids


def _random_hex() -> str:
    try:
        return _random_ids.pop()
    except IndexError:
        pool = os.urandom(16 * _RANDOM_BATCH).hex()
        _random_ids.extend(pool[start : start + 32] for start in range(0, len(pool), 32))
        return _random_ids.pop()


def new_request_id() -> str:
    """A random (version 4) UUID as text, made without building a UUID object (the hot path).

    The randomness comes from ``os.urandom`` in batches, one system call per 256 ids.
    """
    h = _random_hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"


def start_timeout(header: str | None, gapp: GatewayApp) -> float | None:
    """Time-to-start bound: ``X-Fal-Request-Timeout`` wins over the app's ``request_start_timeout``."""
    if header:
        try:
            value = float(header)
        except ValueError:
            raise PlatformError(
                f"Invalid X-Fal-Request-Timeout header: {header!r}", "bad_request", status=400
            ) from None
        if not math.isfinite(value):  # nan, inf, 1e309: no bound is a missing header, not a huge one
            raise PlatformError(
                f"Invalid X-Fal-Request-Timeout header: {header!r} (a finite number of seconds)",
                "bad_request",
                status=400,
            )
        if value <= 1:
            raise PlatformError("X-Fal-Request-Timeout must be greater than 1 second", "bad_request", status=400)
        return value
    configured = gapp.config.scaling.request_start_timeout
    return float(configured) if configured else None


async def acquire(gapp: GatewayApp, request_id: str, timeout: float | None, hint: str | None = None) -> Lease:
    """A lease on one of the app's runners, or the platform error fal answers instead."""
    try:
        return await gapp.pool.acquire(request_id, start_timeout=timeout, hint=hint)
    except RequestStartTimeout:
        raise start_timeout_error() from None
    except RunnerError as exc:
        raise PlatformError(exc.message, exc.error_type) from None


def logs_param(query: bytes) -> bool:
    """``?logs=`` as fal_client (true/false), fal.apps and fal-js (1/0) spell it."""
    if not query:
        return False
    values = parse_qs(query.decode("latin-1")).get("logs")
    return values is not None and values[-1].strip().lower() in _TRUE


def server_host(scope: Scope) -> str:
    server = scope.get("server") or ("127.0.0.1", 80)
    host, port = server[0], server[1]
    if ":" in str(host):
        host = f"[{host}]"
    return f"{host}:{port}"


async def send_json(send: Send, status: int, body: Any, request_id: str, extra: Headers | None = None) -> None:
    data = json.dumps(body).encode()
    headers: Headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(data)).encode()),
        (b"x-fal-request-id", request_id.encode()),
    ]
    if extra:
        headers.extend(extra)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


async def send_error(send: Send, exc: PlatformError, request_id: str) -> None:
    body = exc.encode()
    headers = exc.response_headers(request_id)
    headers.append((b"content-length", b"%d" % len(body)))
    try:
        await send({"type": "http.response.start", "status": exc.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
    except (OSError, RuntimeError):
        pass
