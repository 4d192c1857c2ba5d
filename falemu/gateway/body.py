"""Sync request bodies: read whole before a runner is leased, within a size limit and a time limit.

The gateway leases a runner only once the caller's whole request body is in (what nginx does with
``proxy_request_buffering on``). A caller that sends its head and stalls, trickles its upload or hangs up
half-way holds a socket, never a runner: it cannot starve other callers, and an aborted upload costs no
runner anything, since nothing was forwarded.

Limits (falemu's settings): ``max_body_mb`` (default 100) is the largest body; a declared
``Content-Length`` above it is answered 413 at once, a chunked body as soon as it grows past it.
``body_timeout`` (default 60 s) is the longest pause between two parts of a body (nginx's
``client_body_timeout``), answered 408, which closes the connection. A body up to
:data:`SPOOL_AT` stays in memory; a larger one goes to an unnamed temporary file, which disappears when
the request ends.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator
from typing import IO

from falemu.gateway.asgi import Done, Receive
from falemu.gateway.errors import PlatformError

SPOOL_AT = 1 << 20  # bodies larger than this are kept in a temporary file, not in memory
_READ = 1 << 18  # bytes read from a spooled body at a time when sending it
_CLOSE: list[tuple[bytes, bytes]] = [(b"connection", b"close")]


def too_large_error(limit: int) -> PlatformError:
    """413: the body is larger than the gateway takes. The connection stays open: what the caller still
    sends of the body is read and dropped, so a caller that writes its whole body before reading gets the
    answer instead of a reset connection."""
    return PlatformError(
        f"Request body is larger than {limit >> 20} MB (falemu's max_body_mb setting)", "bad_request", status=413
    )


def body_timeout_error(seconds: float) -> PlatformError:
    """408: the body stopped arriving; the connection closes after the answer."""
    return PlatformError(
        f"The request body stopped arriving for {seconds:g} seconds (falemu's body_timeout setting)",
        "bad_request",
        status=408,
        headers=_CLOSE,
    )


class RequestBody:
    """A request body as it was received: in memory, or in a temporary file once past :data:`SPOOL_AT`."""

    __slots__ = ("_file", "_parts", "size")

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._file: IO[bytes] | None = None
        self.size = 0

    def add(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self._file is not None:
            self._file.write(chunk)
            return
        self._parts.append(chunk)
        if self.size > SPOOL_AT:
            self._file = tempfile.TemporaryFile()  # noqa: SIM115 - closed by close()
            self._file.writelines(self._parts)
            self._parts = []

    def whole(self) -> bytes | None:
        """The body as bytes when it is in memory; None when it was spooled to a file."""
        if self._file is not None:
            return None
        parts = self._parts
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def stream(self) -> AsyncIterator[bytes]:
        """The spooled body, part by part."""
        file = self._file
        if file is None:
            whole = self.whole()
            if whole:
                yield whole
            return
        file.seek(0)
        while chunk := file.read(_READ):
            yield chunk

    def close(self) -> None:
        self._parts = []
        if self._file is not None:
            self._file.close()
            self._file = None


async def read_body(receive: Receive, *, limit: int, timeout: float | None, declared: int | None) -> RequestBody:
    """The caller's whole body. Raises :class:`PlatformError` (413, 408) for a body too large or too slow,
    and :class:`Done` when the caller left before it was in (or its body was malformed, which makes the
    server drop the connection): such a request goes nowhere."""
    if declared is not None and declared > limit:
        raise too_large_error(limit)
    body = RequestBody()
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout) as deadline:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise Done()
                chunk = message.get("body", b"")
                if chunk:
                    if body.size + len(chunk) > limit:
                        raise too_large_error(limit)
                    body.add(chunk)
                if not message.get("more_body", False):
                    return body
                if timeout is not None:
                    deadline.reschedule(loop.time() + timeout)
    except TimeoutError:
        body.close()
        raise body_timeout_error(timeout or 0) from None
    except BaseException:
        body.close()
        raise
