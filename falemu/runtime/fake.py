"""FakeRuntime: runners as tiny in-process HTTP servers, for fast tests of scaling and the gateway.

Each runner is a :class:`http.server.ThreadingHTTPServer` on 127.0.0.1 at an ephemeral port, so the
gateway forwards real HTTP to it. The built-in handler answers any method and path with a JSON echo::

    {"runner": "<runner id>", "method": "POST", "path": "/greet", "query": "...", "body": <json or text>,
     "headers": {<x-fal-* headers it received>}}

and knows a few test knobs: ``?sleep=SECONDS`` (or ``{"sleep": s}`` in a JSON body) delays the answer,
``?status=CODE`` picks the status code. ``GET /health`` answers ``{"ok": true}`` and ``GET /openapi.json``
a small OpenAPI document with ``POST /echo``.

Start behaviour is configurable: ``start_delay`` seconds per start, and ``fail_starts`` failed starts
before the next one succeeds (each raises :class:`~falemu.errors.RunnerError`). Nothing here touches
Docker or the file system.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from falemu.config.model import AppConfig
from falemu.errors import RunnerError
from falemu.events import EventSink, null_sink
from falemu.runtime.base import PreparedApp, Runner, RunnerSpec

OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "fake", "version": "1.0.0"},
    "paths": {
        "/echo": {
            "post": {
                "operationId": "echo",
                "requestBody": {"content": {"application/json": {"schema": {"type": "object"}}}},
                "responses": {"200": {"description": "echo", "content": {"application/json": {"schema": {}}}}},
            }
        }
    },
}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    runner_id: str = ""
    on_log: Any = None
    requests_served: int = 0


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # small responses go out at once, not after the delayed-ACK wait

    def log_message(self, format: str, *args: Any) -> None:
        on_log = self.server.on_log
        if on_log is not None:
            on_log(format % args)

    def _answer(self) -> None:
        parts = urlsplit(self.path)
        query = parse_qs(parts.query)
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        body: Any = raw.decode("utf-8", "replace")
        with contextlib.suppress(ValueError):
            body = json.loads(raw) if raw else None
        if parts.path == "/health" and self.command == "GET":
            self._send(200, {"ok": True})
            return
        if parts.path == "/openapi.json" and self.command == "GET":
            self._send(200, OPENAPI)
            return
        sleep = float(query.get("sleep", ["0"])[0])
        if isinstance(body, dict) and isinstance(body.get("sleep"), int | float):
            sleep = float(body["sleep"])
        if sleep > 0:
            time.sleep(min(sleep, 60.0))
        status = int(query.get("status", ["200"])[0])
        self.server.requests_served += 1
        self._send(
            status,
            {
                "runner": self.server.runner_id,
                "method": self.command,
                "path": parts.path,
                "query": parts.query,
                "body": body,
                "headers": {k.lower(): v for k, v in self.headers.items() if k.lower().startswith("x-fal-")},
            },
        )

    def _send(self, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _answer


class FakeRuntime:
    """A Runtime whose runners are in-process HTTP servers (see the module docstring)."""

    name = "fake"

    def __init__(self, *, start_delay: float = 0.0, fail_starts: int = 0, stop_delay: float = 0.0) -> None:
        self.start_delay = start_delay
        self.fail_starts = fail_starts
        self.stop_delay = stop_delay
        self.started: list[str] = []  # runner ids in start order
        self.stopped: list[str] = []
        self._servers: dict[str, tuple[_Server, threading.Thread]] = {}
        self._lock = threading.Lock()
        self._logs: dict[str, list[str]] = {}

    def prepare(self, app: AppConfig, events: EventSink = null_sink, verbose: bool = False) -> PreparedApp:
        return PreparedApp(app=app, image=None, built=False)

    def start(self, spec: RunnerSpec, events: EventSink = null_sink) -> Runner:
        t0 = time.monotonic()
        if self.start_delay:
            time.sleep(self.start_delay)
        with self._lock:
            if self.fail_starts > 0:
                self.fail_starts -= 1
                raise RunnerError(
                    f"runner {spec.runner_id} exited during start-up with code 1",
                    error_type="runner_scheduling_failure",
                    logs="fake start failure",
                    hint="the fake runtime was told to fail this start",
                )
        server = _Server(("127.0.0.1", 0), _Handler)
        server.runner_id = spec.runner_id
        logs = self._logs.setdefault(spec.runner_id, [])

        def on_log(line: str) -> None:
            logs.append(line)
            if spec.on_log is not None:
                spec.on_log(line)

        server.on_log = on_log
        thread = threading.Thread(target=server.serve_forever, args=(0.05,), name=f"fake-{spec.runner_id}", daemon=True)
        thread.start()
        with self._lock:
            self._servers[spec.runner_id] = (server, thread)
            self.started.append(spec.runner_id)
        on_log(f"fake runner {spec.runner_id} listening")
        host, port = server.server_address[:2]
        return Runner(
            id=spec.runner_id,
            app=spec.prepared.app.alias,
            host=str(host),
            port=int(port),
            timeline={"start": time.monotonic() - t0},
            handle=server,
        )

    def stop(self, runner: Runner, grace: float | None = None) -> None:
        if self.stop_delay:
            time.sleep(self.stop_delay)
        with self._lock:
            entry = self._servers.pop(runner.id, None)
            if entry is not None:
                self.stopped.append(runner.id)
        if entry is None:
            return
        server, thread = entry
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    def logs(self, runner: Runner, follow: bool = False) -> Iterator[str]:
        yield from list(self._logs.get(runner.id, []))

    def is_alive(self, runner: Runner) -> bool:
        with self._lock:
            return runner.id in self._servers

    def kill(self, runner_id: str) -> None:
        """Make a runner die behind the controller's back (a crashed container)."""
        with self._lock:
            entry = self._servers.pop(runner_id, None)
        if entry is not None:
            entry[0].shutdown()
            entry[0].server_close()

    def running(self) -> list[str]:
        with self._lock:
            return list(self._servers)

    def close(self) -> None:
        with self._lock:
            ids = list(self._servers)
        for rid in ids:
            self.stop(Runner(id=rid, app="", host="", port=0))
