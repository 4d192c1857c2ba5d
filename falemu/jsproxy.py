"""``/api/fal/proxy``: the protocol of ``@fal-ai/server-proxy``, so ``@fal-ai/client`` works unmodified.

A web app sets ``proxyUrl: "/api/fal/proxy"`` (or falemu's full URL) and its ``@fal-ai/client`` sends
every request there, with the real target in ``x-fal-target-url``. fal's server proxy
(``@fal-ai/server-proxy`` 1.2, ``src/index.ts``) then, and so does falemu:

- refuses a request without ``x-fal-target-url``, or whose target (host, path and query, no scheme) is
  not one of fal's default allowed patterns: ``fal.run/**``, ``queue.fal.run/**``,
  ``rest.fal.ai/storage/upload/initiate?storage_type=fal-cdn-v3`` and
  ``rest.fal.ai/storage/upload/complete-multipart?storage_type=fal-cdn-v3``: 400 with the JSON
  string ``"Invalid request"`` (so ``initiate-multipart``, which the JS client uses above 90 MB, is
  refused, as by a default server proxy);
- uses the caller's ``Authorization`` when it sends one, else the server's key: falemu's local key
  (:attr:`falemu.emulator.Emulator.api_key`, valid for private apps of any owner);
- sends on only the caller's ``x-fal-*`` headers, plus ``authorization``, ``accept`` and
  ``content-type: application/json``, the caller's ``user-agent`` and
  ``x-fal-client-proxy: @fal-ai/server-proxy/falemu``; a GET has no body, other methods the caller's;
- answers with the target's status, headers and body, streamed (SSE too).

The target is served in-process: ``fal.run`` by the gateway's sync API, ``queue.fal.run`` by its queue
API (whose ``status_url``/``response_url`` then name ``https://queue.fal.run/...``, as on fal, and come
back through the proxy), ``rest.fal.ai`` by the local CDN's storage routes. The methods are GET, POST
and PUT (those of the Next.js route handler). Being on another origin than the web app, falemu adds
CORS headers for pages served from this machine (``localhost``, ``127.0.0.1``, ``[::1]``, any port) and
refuses requests from any other origin with 403, so a page elsewhere cannot spend the local key.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import unquote, urlsplit

from falemu.cdn.http import ASGIApp, Headers, Message, Receive, Request, Scope, Send, cors_headers, is_local_origin

PROXY_ROUTE = "/api/fal/proxy"
TARGET_URL_HEADER = "x-fal-target-url"
PROXY_ID = "@fal-ai/server-proxy/falemu"
METHODS = frozenset({"GET", "POST", "PUT"})
EXPOSED = "x-fal-request-id, x-fal-request-timeout-type, x-fal-error-type, content-type"
# @fal-ai/server-proxy's DEFAULT_ALLOWED_URL_PATTERNS (picomatch globs over host + path + query)
DEFAULT_ALLOWED_URL_PATTERNS = (
    "fal.run/**",
    "queue.fal.run/**",
    "rest.fal.ai/storage/upload/initiate\\?storage_type=fal-cdn-v3",
    "rest.fal.ai/storage/upload/complete-multipart\\?storage_type=fal-cdn-v3",
)
_NOT_PROXIED = ("/_falemu", "/api/")  # falemu's own routes are not fal's, whatever the host


def glob_to_regex(pattern: str) -> re.Pattern[str]:
    """A picomatch-style glob as a regex: ``**`` any characters, ``*`` any but ``/``, ``\\?`` a literal ``?``."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "\\" and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 2
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out))


_ALLOWED = tuple(glob_to_regex(p) for p in DEFAULT_ALLOWED_URL_PATTERNS)


def is_allowed_url(target: str) -> bool:
    """Whether ``@fal-ai/server-proxy``'s default patterns accept this target URL."""
    try:
        url = urlsplit(target)
    except ValueError:
        return False
    if not url.netloc:
        return False
    text = f"{url.netloc}{url.path or '/'}{'?' + url.query if url.query else ''}"
    return any(p.fullmatch(text) for p in _ALLOWED)


class JsProxy:
    """The ASGI app of ``/api/fal/proxy``; ``targets`` maps fal's hosts to the ASGI apps that answer them."""

    def __init__(self, targets: Mapping[str, ASGIApp], api_key: Callable[[], str | None]) -> None:
        self.targets = dict(targets)
        self.api_key = api_key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        request = Request.of(scope, receive)
        origin = request.origin
        if origin is not None and not is_local_origin(origin):
            detail = f"falemu's proxy serves pages on this machine only, not {origin}"
            await _reply(send, 403, {"detail": detail}, [])
            return
        cors = cors_headers(request, expose=EXPOSED)
        if request.method == "OPTIONS":
            await _reply(send, 204, None, cors)
            return
        if request.method not in METHODS:
            await _reply(send, 405, {"detail": "Method Not Allowed"}, cors)
            return
        target = request.header(TARGET_URL_HEADER).strip()
        url = urlsplit(target) if target else None
        app = self.targets.get(url.hostname or "") if url is not None else None
        if url is None or app is None or not is_allowed_url(target) or url.path.startswith(_NOT_PROXIED):
            await _reply(send, 400, "Invalid request", cors)
            return
        authorization = request.header("authorization") or f"Key {self.api_key()}"
        await app(
            self._scope(scope, request, url.hostname or "", url.path, url.query, authorization),
            receive,
            _Send(send, cors),
        )

    def _scope(self, scope: Scope, request: Request, host: str, path: str, query: str, authorization: str) -> Scope:
        headers: Headers = [(b"host", host.encode())]
        for name, value in scope.get("headers", []):
            if name.startswith(b"x-fal-") and name != TARGET_URL_HEADER.encode():
                headers.append((name, value))
        headers += [
            (b"authorization", authorization.encode("latin-1")),
            (b"accept", b"application/json"),
            (b"content-type", b"application/json"),
            (b"user-agent", request.header("user-agent").encode("latin-1")),
            (b"x-fal-client-proxy", PROXY_ID.encode()),
        ]
        if request.method != "GET":
            for name in (b"content-length", b"transfer-encoding"):
                headers += [(n, v) for n, v in scope.get("headers", []) if n == name]
        return {
            "type": "http",
            "asgi": scope.get("asgi", {"version": "3.0"}),
            "http_version": scope.get("http_version", "1.1"),
            "method": request.method,
            "scheme": "https",
            "path": unquote(path) or "/",
            "raw_path": (path or "/").encode("latin-1", "replace"),
            "root_path": "",
            "query_string": query.encode("latin-1", "replace"),
            "headers": headers,
            "server": (host, 443),
            "client": scope.get("client"),
            "state": {},
        }


class _Send:
    """The target's answer, as is, with the CORS headers of the caller's origin."""

    def __init__(self, send: Send, cors: Headers) -> None:
        self._send = send
        self._cors = cors

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start" and self._cors:
            message = dict(message)
            names = {name.lower() for name, _ in self._cors}
            kept = [(n, v) for n, v in message.get("headers", []) if n.lower() not in names]
            message["headers"] = kept + self._cors
        await self._send(message)


async def _reply(send: Send, status: int, body: Any, headers: Headers) -> None:
    data = b"" if body is None else json.dumps(body).encode()
    out: Headers = [(b"content-length", str(len(data)).encode())]
    if body is not None:
        out.append((b"content-type", b"application/json"))
    await send({"type": "http.response.start", "status": status, "headers": out + headers})
    await send({"type": "http.response.body", "body": data})
