"""A probe runner: a tiny direct-server ASGI app for exercising the gateway (tests and benchmarks).

Routes (any method unless noted):

- ``/fast``: ``{"ok": true}``, the cheapest answer (benchmarks);
- ``/sleep?s=0.005``: waits, then ``{"ok": true}`` (an inference-like answer);
- ``/stream`` (POST): ``text/event-stream`` of ``n`` events (``?n=3``); with ``?gate=NAME`` it sends
  the first event, then waits for ``POST /_probe/release/NAME`` before the rest;
- ``/slow`` (POST): waits up to ``?s=30`` seconds unless ``POST /slow/cancel`` arrives with the same
  ``x-fal-request-id``; then 499 ``{"detail": "cancelled"}``;
- ``/status/{code}``: answers ``code``; with ``?times=N&key=K`` only the first N calls for K do, later
  ones get 200;
- ``/log`` (POST): each line of the body goes to ``on_log`` (stdout by default), then ``{"ok": true}``;
- ``/crash``: a 500 answer, then an exception out of the app, as a FastAPI app's unhandled error does
  (uvicorn then closes the connection);
- ``/hints/a,b``: ``{"runner": id}`` with ``X-Fal-Runner-Hints: a,b`` (what fal's SDK sends for
  ``provide_hints()``);
- ``/_probe/calls``: the requests seen so far (method, path, headers, body);
- websockets on any path: first a JSON message with the path, query and headers, then every message
  echoed back prefixed with the runner id; the text ``close`` closes with code 4000;
- anything else: echoes method, path, query, headers and body as JSON.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qs

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_FAST = b'{"ok":true}'


class Probe:
    def __init__(self, runner_id: str = "probe", on_log: Callable[[str], None] | None = None) -> None:
        self.runner_id = runner_id
        self.on_log = on_log or _print_line
        self.calls: list[dict[str, Any]] = []
        self._gates: dict[str, asyncio.Event] = {}
        self._cancels: dict[str, asyncio.Event] = {}
        self._counts: dict[str, int] = {}

    def _gate(self, name: str) -> asyncio.Event:
        event = self._gates.get(name)
        if event is None:
            event = self._gates[name] = asyncio.Event()
        return event

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
            return
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        if path == "/fast":
            await _drain(receive)
            await _respond(send, 200, _FAST)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        query = {k: v[-1] for k, v in parse_qs(scope.get("query_string", b"").decode()).items()}
        body = await _drain(receive)
        self.calls.append(
            {"method": scope["method"], "path": path, "headers": headers, "body": body.decode("utf-8", "replace")}
        )
        request_id = headers.get("x-fal-request-id", "")
        if path == "/sleep":
            await asyncio.sleep(float(query.get("s", "0.005")))
            await _respond(send, 200, _FAST)
        elif path == "/stream":
            await self._stream(send, int(query.get("n", "3")), query.get("gate"))
        elif path.startswith("/_probe/release/"):
            self._gate(path.rsplit("/", 1)[-1]).set()
            await _respond(send, 200, _FAST)
        elif path.startswith("/hints/"):  # the runner reports it is specialized for these hints
            hints = path.split("/", 2)[2].encode()
            await _respond(send, 200, json.dumps({"runner": self.runner_id}).encode(), [(b"x-fal-runner-hints", hints)])
        elif path == "/_probe/calls":
            await _respond(send, 200, json.dumps(self.calls).encode())
        elif path == "/slow":
            event = self._cancels.setdefault(request_id, asyncio.Event())
            self.on_log(f"slow request {request_id} started")
            try:
                async with asyncio.timeout(float(query.get("s", "30"))):
                    await event.wait()
            except TimeoutError:
                await _respond(send, 200, json.dumps({"slept": True, "runner": self.runner_id}).encode())
                return
            self.on_log(f"slow request {request_id} cancelled")
            await _respond(send, 499, b'{"detail":"cancelled"}')
        elif path == "/slow/cancel":
            self._cancels.setdefault(request_id, asyncio.Event()).set()
            await _respond(send, 200, _FAST)
        elif path.startswith("/status/"):
            code = int(path.rsplit("/", 1)[-1])
            key = query.get("key", "")
            seen = self._counts.get(key, 0)
            self._counts[key] = seen + 1
            if "times" in query and seen >= int(query["times"]):
                await _respond(
                    send, 200, json.dumps({"ok": True, "runner": self.runner_id, "calls": seen + 1}).encode()
                )
            else:
                await _respond(send, code, json.dumps({"detail": f"status {code}", "runner": self.runner_id}).encode())
        elif path == "/crash":
            await _respond(send, 500, b'{"detail":"Internal Server Error"}')
            raise RuntimeError("the probe crashed on purpose")
        elif path == "/log":
            for line in body.decode().splitlines():
                self.on_log(line)
            await _respond(send, 200, json.dumps({"ok": True, "runner": self.runner_id}).encode())
        else:
            echo = {
                "method": scope["method"],
                "path": path,
                "raw_path": (scope.get("raw_path") or b"").decode("latin-1"),
                "query": scope.get("query_string", b"").decode("latin-1"),
                "headers": headers,
                "body": body.decode("utf-8", "replace"),
                "runner": self.runner_id,
            }
            await _respond(send, 200, json.dumps(echo).encode())

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Echo: every message comes back prefixed with the runner id; ``close`` closes with 4000."""
        message = await receive()  # websocket.connect
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        self.calls.append({"method": "WEBSOCKET", "path": scope["path"], "headers": headers, "body": ""})
        subprotocols = scope.get("subprotocols") or []
        await send({"type": "websocket.accept", "subprotocol": subprotocols[0] if subprotocols else None})
        info = {"path": scope["path"], "query": scope.get("query_string", b"").decode(), "headers": headers}
        await send({"type": "websocket.send", "text": json.dumps(info)})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            if text == "close":
                await send({"type": "websocket.close", "code": 4000, "reason": "asked to"})
                return
            if text is not None:
                await send({"type": "websocket.send", "text": f"{self.runner_id}: {text}"})
            else:
                await send({"type": "websocket.send", "bytes": self.runner_id.encode() + b": " + message["bytes"]})

    async def _stream(self, send: Send, n: int, gate: str | None) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")],
            }
        )
        for i in range(n):
            event = json.dumps({"i": i, "runner": self.runner_id})
            await send({"type": "http.response.body", "body": f"data: {event}\n\n".encode(), "more_body": True})
            if i == 0 and gate:
                await self._gate(gate).wait()
        await send({"type": "http.response.body", "body": b""})


def _print_line(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def _drain(receive: Receive) -> bytes:
    parts: list[bytes] = []
    while True:
        message = await receive()
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(parts)


async def _respond(send: Send, status: int, body: bytes, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body)), *(extra or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


app = Probe()  # `uvicorn falemu.gateway.probe:app`
