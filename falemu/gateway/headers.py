"""Which headers cross the gateway, and which the platform keeps for itself.

Callers may not set ``x-fal-*`` headers on a runner: the gateway drops them, after reading the
platform headers it acts on (request timeout, no-retry, queue priority, runner hint), except the two
the fal SDK reads inside the runner (``x-fal-object-lifecycle-preference``, ``x-fal-cdn-token``). Runners get
``x-fal-request-id``, ``x-fal-endpoint`` and ``x-fal-caller-user-id`` from the gateway instead. A fal
key in ``Authorization`` is consumed by the gateway and not forwarded; any other ``Authorization``
passes through. Hop-by-hop headers are dropped both ways, and the framing of each hop is the
gateway's own. A header whose name is one of those with ``_`` for ``-`` is dropped too (WSGI and CGI
runners could not tell it from the real one).
"""

from __future__ import annotations

from dataclasses import dataclass

from falemu.gateway.keys import looks_like_key
from falemu.gateway.upstream import Headers

# x-fal-* headers a caller may send that fal passes on to the runner (the fal SDK reads them there).
PASSED_ON = frozenset({b"x-fal-object-lifecycle-preference", b"x-fal-cdn-token"})

HOP_BY_HOP_REQUEST = frozenset(
    {
        b"host",
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"content-length",
        b"expect",  # the gateway sends the body itself; interim 100 answers are skipped
    }
)
HOP_BY_HOP_RESPONSE = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"x-fal-request-id",
    }
)


@dataclass
class Incoming:
    """What the gateway read from a caller's headers."""

    forward: Headers
    authorization: str | None = None
    request_timeout: str | None = None  # X-Fal-Request-Timeout: time-to-start, seconds
    no_retry: bool = False
    priority: str = "normal"
    runner_hint: str | None = None
    content_length: int | None = None
    host: str | None = None
    chunked: bool = False  # the body comes with Transfer-Encoding (its length is unknown up front)
    store_io: bool = True  # X-Fal-Store-IO: 0 keeps the request's input and output out of the history


def split_headers(raw: Headers) -> Incoming:
    """Split a caller's headers into what goes to the runner and what the platform consumes."""
    forward: Headers = []
    incoming = Incoming(forward)
    for name, value in raw:
        if name.startswith(b"x-fal-"):
            if name == b"x-fal-request-timeout":
                incoming.request_timeout = value.decode("latin-1")
            elif name == b"x-fal-no-retry":
                incoming.no_retry = value.strip().lower() not in (b"0", b"false", b"no", b"")
            elif name == b"x-fal-queue-priority":
                incoming.priority = value.decode("latin-1").strip().lower() or "normal"
            elif name == b"x-fal-runner-hint":
                incoming.runner_hint = value.decode("latin-1")
            elif name == b"x-fal-store-io":
                incoming.store_io = value.strip().lower() not in (b"0", b"false", b"no")
            elif name in PASSED_ON:
                forward.append((name, value))
            continue
        if name in HOP_BY_HOP_REQUEST:
            if name == b"content-length":
                try:
                    incoming.content_length = int(value)
                except ValueError:
                    incoming.content_length = None
            elif name == b"host":
                incoming.host = value.decode("latin-1")
            elif name == b"transfer-encoding":
                incoming.chunked = True
            continue
        if name == b"authorization":
            text = value.decode("latin-1")
            if looks_like_key(text):  # a fal key, good or bad: the platform's, never forwarded
                previous = incoming.authorization
                if previous is not None and looks_like_key(previous) and previous != text:
                    text = "Key"  # two different keys: neither is taken (401)
                incoming.authorization = text
                continue
            if incoming.authorization is None:
                incoming.authorization = text
        elif b"_" in name and _disguised(name):
            continue
        forward.append((name, value))
    return incoming


def _disguised(name: bytes) -> bool:
    """A header name that differs from one the platform keeps only by ``_`` for ``-`` (``x_fal_caller_user_id``).
    WSGI and CGI servers give both spellings the same variable (``HTTP_X_FAL_CALLER_USER_ID``), so such a
    header could stand in for the real one: it is dropped, as nginx drops headers with underscores."""
    normal = name.replace(b"_", b"-")
    return normal.startswith(b"x-fal-") or normal in HOP_BY_HOP_REQUEST


def identity_headers(request_id: str, endpoint: str, caller: str | None) -> Headers:
    """The headers fal's gateway adds to every request it hands a runner."""
    headers: Headers = [
        (b"x-fal-request-id", request_id.encode()),
        (b"x-fal-endpoint", endpoint.encode()),
    ]
    if caller is not None:
        headers.append((b"x-fal-caller-user-id", caller.encode()))
    return headers


def response_headers(raw: Headers, request_id: bytes) -> Headers:
    """A runner's response headers for the caller, with the gateway's request id."""
    out: Headers = [(name, value) for name, value in raw if name not in HOP_BY_HOP_RESPONSE]
    out.append((b"x-fal-request-id", request_id))
    return out


def runner_hints(headers: Headers) -> list[str] | None:
    """The hints a runner's response reports (``X-Fal-Runner-Hints: a,b``), None when it reports none."""
    for name, value in headers:
        if name == b"x-fal-runner-hints":
            return [hint.strip() for hint in value.decode("latin-1").split(",") if hint.strip()]
    return None
