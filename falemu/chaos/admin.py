"""``/_falemu/chaos``: the admin routes ``falemu chaos`` uses against a running ``falemu up``.

* ``GET /_falemu/chaos``: the faults (in effect and recently ended) as ``{"faults": [...]}``;
* ``POST /_falemu/chaos`` with a fault spec as JSON (:func:`falemu.chaos.faults.parse_spec`): puts it in
  effect, answers ``{"fault": {...}}``; a bad spec is 400 ``{"detail", "hint"}``;
* ``POST /_falemu/chaos/clear`` with ``{"id": "f1"}``, ``{"app": "greeter"}`` or ``{}`` (all): ends them.

Like the other admin routes they need ``X-Falemu-Admin-Token`` from the state file (:mod:`falemu.state`).
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from falemu.chaos.faults import parse_spec
from falemu.errors import FalemuError

if TYPE_CHECKING:
    from falemu.emulator import Emulator

ROUTE = "/_falemu/chaos"
MAX_BODY = 64 * 1024
Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]


def chaos_app(emulator: Emulator) -> Callable[[dict[str, Any], Receive, Send], Awaitable[None]]:
    """The ASGI app behind :data:`ROUTE` (see the module docstring)."""
    from falemu.state import ADMIN_HEADER

    async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if not hmac.compare_digest(headers.get(ADMIN_HEADER, "").encode(), emulator.admin_token.encode()):
            await _json(send, 401, {"detail": "falemu admin token missing or wrong", "error_type": "unauthorized"})
            return
        path = scope["path"].rstrip("/")
        method = scope.get("method", "GET")
        chaos = emulator.chaos
        try:
            if path == ROUTE and method == "GET":
                await _json(send, 200, {"faults": chaos.rows()})
            elif path == ROUTE and method == "POST":
                spec = parse_spec(await _body(receive))
                fault = chaos.add(spec)
                await _json(send, 200, {"fault": fault.row(emulator.clock.now())})
            elif path == ROUTE + "/clear" and method == "POST":
                data = await _body(receive)
                ended = chaos.clear(_text(data, "id"), _text(data, "app"))
                now = emulator.clock.now()
                await _json(send, 200, {"cleared": [f.row(now) for f in ended]})
            else:
                await _json(
                    send, 404, {"detail": f"no admin route {method} {scope['path']}", "error_type": "not_found"}
                )
        except FalemuError as exc:
            await _json(send, 400, {"detail": exc.message, "hint": exc.hint})

    return app


def _text(data: dict[str, Any], name: str) -> str | None:
    value = data.get(name)
    return str(value) if value else None


async def _body(receive: Receive) -> dict[str, Any]:
    from falemu.errors import UsageError

    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            raise UsageError("the fault spec is too large", hint="send one small JSON object")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    raw = b"".join(chunks)
    try:
        data = json.loads(raw) if raw.strip() else {}
    except ValueError:
        raise UsageError("the fault spec is not JSON", hint='for example {"kind": "error", "app": "greeter"}') from None
    if not isinstance(data, dict):
        raise UsageError("the fault spec is not a JSON object", hint='for example {"kind": "kill", "app": "greeter"}')
    return data


async def _json(send: Send, status: int, payload: Any) -> None:
    body = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
