"""What the gateway accepts from a connection before it is a request, and how it refuses the rest.

Limits on a request head, checked while the head arrives (so a huge head is never held whole):

- the request target (URL) is at most :data:`MAX_URL` bytes, else 414;
- the header fields together are at most :data:`MAX_HEADER_BYTES` bytes, and at most
  :data:`MAX_HEADERS` of them, else 431.

Both answers are fal-style JSON errors (``{"detail", "error_type": "bad_request"}`` with
``x-fal-request-id``), sent before anything is forwarded; the connection is then closed.

Time limits: a connection's first byte (and its TLS handshake) and each request head must arrive
within :data:`HEAD_TIMEOUT` seconds of the connection, or of the head's first byte; a head that
trickles in byte by byte does not extend it. Tests shorten these module constants.

File descriptors: :func:`raise_open_files_limit` lifts the soft ``RLIMIT_NOFILE`` to the hard one when
the gateway starts, and :func:`descriptor_budget` says how many descriptors the gateway lets
connections use before it closes the oldest idle ones (see :mod:`falemu.gateway.listener`).
"""

from __future__ import annotations

from falemu.gateway.asgi import new_request_id
from falemu.gateway.errors import PlatformError

MAX_URL = 32 * 1024  # bytes of the request target
MAX_HEADER_BYTES = 64 * 1024  # bytes of the header fields of one request, together
MAX_HEADERS = 100  # header fields of one request
HEAD_TIMEOUT = 30.0  # seconds for the first byte, the TLS handshake, and each request head
LINGER = 2.0  # seconds a refused connection keeps reading (and dropping) what the caller still sends
FD_RESERVE = 256  # descriptors kept for runner connections, files and the rest of the process
MAX_CONNECTIONS: int | None = None  # open connections before the oldest idle ones close (None: by descriptors)

_STATUS_TEXT = {
    408: b"Request Timeout",
    414: b"URI Too Long",
    431: b"Request Header Fields Too Large",
    400: b"Bad Request",
    403: b"Forbidden",
    502: b"Bad Gateway",
}


def error_response(status: int, detail: str, *, close: bool = True) -> bytes:
    """A whole HTTP/1.1 response with a fal-style ``bad_request`` error body."""
    error = PlatformError(detail, "bad_request", status=status)
    body = error.encode()
    lines = [b"HTTP/1.1 %d %s" % (status, _STATUS_TEXT.get(status, b""))]
    lines += [name + b": " + value for name, value in error.response_headers(new_request_id())]
    lines.append(b"content-length: %d" % len(body))
    if close:
        lines.append(b"connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def url_too_long() -> tuple[int, str]:
    return 414, f"Request target is longer than {MAX_URL} bytes"


def headers_too_large() -> tuple[int, str]:
    return 431, f"Request header fields are larger than {MAX_HEADER_BYTES} bytes together"


def too_many_headers() -> tuple[int, str]:
    return 431, f"Request has more than {MAX_HEADERS} header fields"


def raise_open_files_limit() -> int:
    """Lift the soft limit on open files to the hard limit (at most 2**20); returns the soft limit."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on Windows
        return 1 << 20
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 1 << 20 if hard == resource.RLIM_INFINITY else min(hard, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError):
            pass
    return 1 << 20 if soft == resource.RLIM_INFINITY else int(soft)


def descriptor_budget(soft_limit: int) -> int:
    """The highest descriptor number a new connection may get before the oldest idle ones are closed."""
    return max(64, soft_limit - max(FD_RESERVE, soft_limit // 10))
