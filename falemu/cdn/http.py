"""Small ASGI pieces the CDN's routes share: requests, JSON answers, bodies to disk, files with ranges, CORS."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any
from urllib.parse import parse_qs

from falemu.cdn.store import StoredFile, Upload

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

WRITE_BATCH = 1024 * 1024  # bytes of a request body collected before one write to disk (in a thread)
READ_CHUNK = 1024 * 1024  # bytes of a file read (in a thread) per response part
_LOCAL_ORIGIN = re.compile(r"https?://(localhost|127\.0\.0\.1|\[::1\])(:\d{1,5})?")


class Disconnected(Exception):
    """The caller went away before its request body was complete."""


class HttpError(Exception):
    """An answer other than success: ``{"detail": message}`` with ``status``."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


@dataclass
class Request:
    """What a route reads of an HTTP scope."""

    scope: Scope
    receive: Receive
    method: str = ""
    path: str = ""
    query: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, scope: Scope, receive: Receive, prefix: str = "") -> Request:
        path: str = scope.get("path", "")
        if prefix and path.startswith(prefix):
            path = path[len(prefix) :] or "/"
        query = {k: v[-1] for k, v in parse_qs(scope.get("query_string", b"").decode("latin-1")).items()}
        headers: dict[str, str] = {}
        for name, value in scope.get("headers", []):
            key = name.decode("latin-1").lower()
            text = value.decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        return cls(scope, receive, scope.get("method", "GET").upper(), path, query, headers)

    def header(self, name: str, default: str = "") -> str:
        return self.headers.get(name.lower(), default)

    @property
    def origin(self) -> str | None:
        return self.headers.get("origin")

    def base_url(self) -> str:
        """``scheme://host`` as the caller addressed this server."""
        scheme = self.scope.get("scheme", "http")
        host = self.headers.get("host")
        if not host:
            server = self.scope.get("server") or ("127.0.0.1", 80)
            host = f"[{server[0]}]:{server[1]}" if ":" in str(server[0]) else f"{server[0]}:{server[1]}"
        return f"{scheme}://{host}"

    async def body(self, limit: int = 1024 * 1024) -> bytes:
        parts: list[bytes] = []
        size = 0
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                raise Disconnected()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise HttpError(413, "Request body too large")
            parts.append(chunk)
            if not message.get("more_body", False):
                return b"".join(parts)

    async def json(self) -> Any:
        raw = await self.body()
        if not raw.strip():
            return {}
        try:
            return json.loads(raw)
        except ValueError:
            raise HttpError(422, "The request body is not valid JSON") from None

    async def stream_to(self, upload: Upload) -> int:
        """Write the request body to ``upload`` as it arrives (at most :data:`WRITE_BATCH` held); its size."""
        buffer = bytearray()
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                raise Disconnected()
            buffer += message.get("body", b"")
            more = message.get("more_body", False)
            if len(buffer) >= WRITE_BATCH or (not more and buffer):
                await asyncio.to_thread(upload.write, bytes(buffer))
                buffer.clear()
            if not more:
                return upload.size


# -- answers ------------------------------------------------------------------------------------------
async def send_json(send: Send, status: int, body: Any, headers: Headers | None = None) -> None:
    data = json.dumps(body).encode()
    out: Headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    out.extend(headers or [])
    await send({"type": "http.response.start", "status": status, "headers": out})
    await send({"type": "http.response.body", "body": data})


async def send_empty(send: Send, status: int, headers: Headers | None = None) -> None:
    out: Headers = [(b"content-length", b"0")]
    out.extend(headers or [])
    await send({"type": "http.response.start", "status": status, "headers": out})
    await send({"type": "http.response.body", "body": b""})


def parse_range(header: str, size: int) -> tuple[int, int] | bool | None:
    """A single ``bytes=`` range of ``Range`` as (first, last) inclusive.

    None when there is no usable single range (the whole file is sent: a server may ignore a Range
    it does not serve, multi-range included); False when the range cannot be satisfied (416).
    """
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first_text, dash, last_text = spec.strip().partition("-")
    if not dash:
        return None
    try:
        if not first_text:  # the last N bytes
            suffix = int(last_text)
            if suffix < 0:
                return None
            if suffix == 0 or size == 0:
                return False
            return max(0, size - suffix), size - 1
        first = int(first_text)
        last = int(last_text) if last_text else size - 1
    except ValueError:
        return None
    if first < 0 or (last_text and last < first):
        return None
    if first >= size:
        return False
    return first, min(last, size - 1)


def _read(path: str, offset: int, length: int) -> bytes:
    with open(path, "rb") as fh:
        fh.seek(offset)
        return fh.read(length)


async def send_file(send: Send, request: Request, stored: StoredFile, headers: Headers | None = None) -> None:
    """The file's bytes with its content type; ``Range`` (one range), ``If-None-Match`` and HEAD served."""
    base: Headers = [
        (b"content-type", stored.content_type.encode("latin-1", "replace")),
        (b"accept-ranges", b"bytes"),
        (b"etag", stored.etag.encode()),
        (b"last-modified", formatdate(stored.created, usegmt=True).encode()),
        (b"cache-control", b"public, max-age=31536000, immutable"),
    ]
    base.extend(headers or [])
    if stored.etag in [tag.strip() for tag in request.header("if-none-match").split(",")]:
        await send_empty(send, 304, base)
        return
    first, last = 0, stored.size - 1
    status = 200
    wanted = request.header("range")
    if wanted and request.header("if-range", stored.etag) == stored.etag:
        span = parse_range(wanted, stored.size)
        if span is False:
            await send_empty(send, 416, [*base, (b"content-range", f"bytes */{stored.size}".encode())])
            return
        if isinstance(span, tuple):
            first, last = span
            status = 206
            base.append((b"content-range", f"bytes {first}-{last}/{stored.size}".encode()))
    length = max(0, last - first + 1)
    base.append((b"content-length", str(length).encode()))
    await send({"type": "http.response.start", "status": status, "headers": base})
    if request.method == "HEAD" or length == 0:
        await send({"type": "http.response.body", "body": b""})
        return
    path = str(stored.path)
    offset, remaining = first, length
    while remaining > 0:
        chunk = await asyncio.to_thread(_read, path, offset, min(READ_CHUNK, remaining))
        if not chunk:  # the file shrank (removed meanwhile): end the response short rather than hang
            break
        offset += len(chunk)
        remaining -= len(chunk)
        await send({"type": "http.response.body", "body": chunk, "more_body": remaining > 0})
    if remaining > 0:
        await send({"type": "http.response.body", "body": b""})


# -- CORS ---------------------------------------------------------------------------------------------
def is_local_origin(origin: str | None) -> bool:
    """An ``Origin`` of a page served from this machine (localhost, 127.0.0.1, [::1], any port)."""
    return origin is not None and _LOCAL_ORIGIN.fullmatch(origin.strip()) is not None


def cors_headers(request: Request, *, any_origin: bool = False, expose: str = "") -> Headers:
    """Headers that let a browser page on this machine (or any page, ``any_origin``) read the answer."""
    origin = request.origin
    if origin is None:
        return []
    if any_origin:
        out: Headers = [(b"access-control-allow-origin", b"*")]
    elif is_local_origin(origin):
        out = [(b"access-control-allow-origin", origin.encode("latin-1")), (b"vary", b"Origin")]
    else:
        return []
    if expose:
        out.append((b"access-control-expose-headers", expose.encode()))
    if request.method == "OPTIONS":
        wanted = request.header("access-control-request-headers")
        out += [
            (b"access-control-allow-methods", b"GET, HEAD, POST, PUT, DELETE, OPTIONS"),
            (b"access-control-allow-headers", (wanted or "*").encode("latin-1")),
            (b"access-control-max-age", b"600"),
        ]
    return out
