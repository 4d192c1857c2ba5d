"""Hostile HTTP against the gateway's own endpoints: it must keep serving whatever callers send.

    python bench/http_fuzz.py [--random 400] [--seed 1] [--idle 64] [--workers 16] [--seconds 120] [--json]
    python bench/http_fuzz.py --url http://127.0.0.1:8787 --app greeter [--key ID:SECRET] [--admin-token T]

By default it starts its own gateway the way ``falemu up`` serves it (:class:`falemu.emulator.Emulator`
with in-process runners, :class:`falemu.runtime.fake.FakeRuntime`, a public and a private app,
``body_timeout`` 1 s), in a temporary home. ``--url`` points it at a running ``falemu up`` instead
(loopback only; crashes are then seen only as 500s and a gateway that stops answering).

What it sends, each on its own connection, sync (``/{owner}/{app}/...``), queue (``/queue/...``) and
falemu's own routes (``/_falemu/...``) alike:

- malformed request lines and heads: garbage, HTTP/0.9, unknown versions and methods, absolute- and
  authority-form targets, ``OPTIONS *``, NUL bytes, bare CR or LF, obs-fold, headers without a colon,
  non-ASCII paths, bad percent-encoding, oversized URLs, header lines and header counts;
- request smuggling shapes: Content-Length with Transfer-Encoding, duplicate and conflicting
  Content-Length, obfuscated Transfer-Encoding, bad chunk sizes and framing; each carries a second
  request in its body, which must never reach a runner;
- platform headers with bad values (``X-Fal-Request-Timeout: nan``, odd ``Authorization``, queue
  priorities, runner hints), bad queue ids, admin routes without or with wrong tokens;
- connection misuse: pipelined requests with garbage after them, a head sent a byte at a time, a body
  that stops arriving, a half-closed or reset connection;
- ``--random`` mutations of valid requests (bytes flipped, inserted, dropped, lines duplicated, cut).

Meanwhile ``--idle`` connections sit open without a byte and a few hold half a request head, and a
well-behaved client calls the sync and queue APIs every 20 ms. The report counts gateway crashes
(errors logged by the gateway's server or event loop, an uncaught exception's plain 500, or the gateway
not answering at the end), 5xx answers to client mistakes, smuggled requests and the well-behaved
client's failures: all must be 0. Everything is bounded: the cases' count, each connection's time
(``--case-timeout``), the whole run (``--seconds``) and the number of open sockets.

Some answers depend on the gateway's HTTP protocol limits (request-head size, 431/414, and head-read
timeouts for idle and half-open connections): those cases are marked ``[protocol]`` and reported
apart; ``--strict-protocol`` also fails them when their answer is not the expected one.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import logging
import os
import random
import re
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
_STATUS = re.compile(rb"HTTP/1\.[01] (\d{3})[ \r]")  # a status line (a body may end without a line break)
_CRASH_BODY = b"Internal Server Error"  # uvicorn's answer to an exception nobody caught
_HEAD_WAIT = 40.0  # a head that never completes is answered after the gateway's head-read timeout (30 s)


@dataclass
class Target:
    host: str
    port: int
    owner: str
    app: str  # a public app
    private: str | None = None  # a private app, when there is one
    key: str | None = None
    admin_token: str | None = None
    smuggled: Callable[[], list[str]] = field(default=lambda: [])  # runner log lines naming a smuggled path


@dataclass
class Case:
    name: str
    data: bytes | list[bytes]  # a list is sent part by part, 10 ms apart
    expect: str = "4xx"  # what a strict gateway answers: "4xx", "2xx", "any" (not 5xx), or a status like "431"
    protocol: bool = False  # the answer depends on the HTTP protocol layer's limits
    answers: int = 1  # responses expected on the connection
    then: str = ""  # "half-close" or "reset" after sending
    marker: str = ""  # a smuggled path that must never reach a runner
    wait: float = 0.0  # seconds its answer may take at most, when longer than --case-timeout (--long)


@dataclass
class Result:
    name: str
    statuses: list[int]
    closed: bool
    seconds: float
    crash: bool = False
    expected: bool = True
    protocol: bool = False
    by_runner: bool = False  # the answer came from a runner (the fake runners' http.server), not the gateway
    error: str = ""


# -- the cases ------------------------------------------------------------------------------------------------


def _req(
    method: str, path: str, headers: list[str] | None = None, body: bytes = b"", version: str = "HTTP/1.1"
) -> bytes:
    lines = [f"{method} {path} {version}", "host: 127.0.0.1", *(headers or [])]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def static_cases(t: Target) -> list[Case]:
    """The named cases: every shape listed in the module docstring."""
    sync = f"/{t.owner}/{t.app}/echo"
    queue = f"/queue/{t.owner}/{t.app}/echo"
    requests = f"/queue/{t.owner}/{t.app}/requests"
    admin = t.admin_token or "no-token"
    key = t.key or "no:key"
    cases: list[Case] = []

    def add(name: str, data: bytes | list[bytes], expect: str = "4xx", **kw: Any) -> None:
        cases.append(Case(name, data, expect, **kw))

    def smuggle(name: str, headers: list[str], body_prefix: bytes, version: str = "HTTP/1.1") -> None:
        """An ambiguous body that hides a second request: refused, and the hidden one reaches no runner."""
        marker = f"smuggled-{len(cases)}"
        hidden = _req("GET", f"/{t.owner}/{t.app}/{marker}")
        add(name, _req("POST", sync, headers, body_prefix + hidden, version), "4xx", marker=marker)

    # request lines
    add("garbage", b"garbage\r\n\r\n")
    add("empty-line-only", b"\r\n\r\n", "any")
    add("method-only", b"GET\r\n\r\n")
    add("http09", f"GET {sync}\r\n".encode(), protocol=True, wait=_HEAD_WAIT)  # never a complete head
    add("http09-bare", f"GET {sync}\r\n\r\n".encode())
    add("version-9.9", _req("GET", sync, version="HTTP/9.9"))
    add("version-2.0", _req("GET", sync, version="HTTP/2.0"))
    add("version-1.2", _req("GET", sync, version="HTTP/1.2"))
    add("version-garbage", _req("GET", sync, version="HTTX/1.1"))
    add("http10", _req("GET", sync, version="HTTP/1.0"), "2xx")
    add("unknown-method", _req("FOO", sync))
    add("lowercase-method", _req("get", sync))
    add("nul-in-method", _req("G\0T", sync))
    add("no-host", f"GET {sync} HTTP/1.1\r\n\r\n".encode(), "any")
    add("absolute-form", _req("GET", f"http://evil.example{sync}"), "any")
    add("absolute-form-queue", _req("POST", f"http://127.0.0.1{queue}", ["content-length: 2"], b"{}"), "any")
    add("authority-form-garbage", _req("CONNECT", "no-port-here"), "4xx")  # a CONNECT to a closed port is a 502
    add("asterisk-form", _req("OPTIONS", "*"), "any")
    add("space-in-target", f"GET /{t.owner}/{t.app}/a b HTTP/1.1\r\nhost: x\r\n\r\n".encode())
    add("non-ascii-path", _req("GET", sync).replace(b"/echo", b"/\xe9\xff"), "any")
    add("nul-in-path", _req("GET", sync + "\0x"))
    add("bad-percent", _req("GET", sync + "/%zz%"), "any")
    add("percent-nul", _req("GET", sync + "/%00"), "any")
    add("encoded-slash-owner", _req("GET", f"/{t.owner}%2f{t.app}/echo"), "404")
    add("encoded-slash-app", _req("GET", f"/{t.owner}/{t.app}%2Fx/echo"), "404")
    add("dot-segments", _req("GET", f"/{t.owner}/{t.app}/../../_falemu/ps"), "any")
    add("bare-lf", f"GET {sync} HTTP/1.1\nhost: x\n\n".encode(), "any")
    add("bare-cr", f"GET {sync} HTTP/1.1\rhost: x\r\r".encode())
    add("long-url", _req("GET", sync + "?" + "a" * 100_000), "414", protocol=True)
    # headers
    add("obs-fold", _req("GET", sync, ["x-a: one", " folded"]))
    add("header-no-colon", _req("GET", sync, ["not a header"]))
    add("space-before-colon", _req("GET", sync, ["x-a : b"]))
    add("nul-in-header-value", _req("GET", sync, ["x-a: a\0b"]))
    add("nul-in-header-name", _req("GET", sync, ["x-\0a: b"]))
    add("cr-in-header-value", _req("GET", sync, ["x-a: a\rb"]))
    add("latin1-header-value", _req("GET", sync, ["x-a: caf\xe9"]), "2xx")
    add("huge-header", _req("GET", sync, ["x-big: " + "b" * 100_000]), "431", protocol=True)
    add("many-headers", _req("GET", sync, [f"x-h{i}: v" for i in range(5000)]), "431", protocol=True)
    add("underscore-fal-header", _req("GET", sync, ["x_fal_caller_user_id: admin"]), "2xx")
    add("timeout-nan", _req("GET", sync, ["x-fal-request-timeout: nan"]))
    add("timeout-inf", _req("GET", sync, ["x-fal-request-timeout: inf"]))
    add("timeout-huge", _req("GET", sync, ["x-fal-request-timeout: 1e309"]))
    add("timeout-empty", _req("GET", sync, ["x-fal-request-timeout: "]), "2xx")
    add("timeout-negative", _req("GET", sync, ["x-fal-request-timeout: -5"]))
    add("queue-timeout-nan", _req("POST", queue, ["x-fal-request-timeout: nan", "content-length: 2"], b"{}"))
    add("auth-key-empty", _req("GET", sync, ["authorization: Key"]))
    add("auth-key-colon", _req("GET", sync, ["authorization: Key :"]))
    add("auth-key-tab", _req("GET", sync, ["authorization: Key\tnobody:secret"]))
    add("auth-bearer-empty", _req("GET", sync, ["authorization: Bearer "]), "any")
    add("auth-long", _req("GET", sync, ["authorization: Key " + "k" * 20_000 + ":s"]))
    add("auth-two-keys", _req("GET", sync, [f"authorization: Key {key}", "authorization: Key other:key"]))
    if t.private:
        add("private-no-key", _req("GET", f"/{t.owner}/{t.private}/echo"))
        add("private-bad-key", _req("GET", f"/{t.owner}/{t.private}/echo", ["authorization: Key a:b"]))
    add("runner-hint-binary", _req("GET", sync, ["x-fal-runner-hint: \x01\x02\xff"]), "any")
    add("runner-hint-latin1", _req("GET", sync, ["x-fal-runner-hint: caf\xe9"]), "2xx")
    add("host-queue-prefix", _req("GET", "/x/y", ["host: queue.127.0.0.1"]).replace(b"host: 127.0.0.1\r\n", b""))
    add("expect-continue-no-body", _req("POST", sync, ["expect: 100-continue", "content-length: 0"]), "2xx")
    add("expect-weird", _req("POST", sync, ["expect: 999-weird", "content-length: 0"]), "any")
    add("upgrade-h2c", _req("GET", sync, ["connection: upgrade", "upgrade: h2c"]), "any")
    add("websocket-no-key", _req("GET", sync, ["connection: upgrade", "upgrade: websocket"]), "any")
    # body framing and smuggling shapes
    smuggle("cl-and-te", ["content-length: 5", "transfer-encoding: chunked"], b"0\r\n\r\n")
    smuggle("te-and-cl", ["transfer-encoding: chunked", "content-length: 100"], b"0\r\n\r\n")
    smuggle("cl-cl-differ", ["content-length: 5", "content-length: 40"], b"abcde")
    smuggle("cl-cl-same", ["content-length: 5", "content-length: 5"], b"abcde")
    smuggle("cl-list", ["content-length: 5, 5"], b"abcde")
    smuggle("te-te", ["transfer-encoding: chunked", "transfer-encoding: identity"], b"0\r\n\r\n")
    smuggle("te-obfuscated", ["transfer-encoding: xchunked"], b"0\r\n\r\n")
    smuggle("te-space-colon", ["transfer-encoding : chunked"], b"0\r\n\r\n")
    smuggle("te-chunked-identity", ["transfer-encoding: chunked, identity"], b"0\r\n\r\n")
    smuggle("te-vertical-tab", ["transfer-encoding:\x0bchunked"], b"0\r\n\r\n")
    add("te-http10", _req("POST", sync, ["transfer-encoding: chunked"], b"3\r\nabc\r\n0\r\n\r\n", "HTTP/1.0"), "any")
    add("te-tab", _req("POST", sync, ["transfer-encoding:\tchunked"], b"3\r\nabc\r\n0\r\n\r\n"), "2xx")
    add("cl-negative", _req("POST", sync, ["content-length: -1"], b"x"))
    add("cl-plus", _req("POST", sync, ["content-length: +3"], b"abc"))
    add("cl-huge", _req("POST", sync, ["content-length: 99999999999999999999999"], b"x"))
    add("cl-hex", _req("POST", sync, ["content-length: 0x10"], b"x"))
    add("cl-over-max-body", _req("POST", sync, [f"content-length: {200 << 20}"]), "413")
    for name, chunk in (
        ("chunk-size-garbage", b"zz\r\nabc\r\n0\r\n\r\n"),
        ("chunk-size-negative", b"-1\r\nabc\r\n0\r\n\r\n"),
        ("chunk-size-overflow", b"ffffffffffffffffffff\r\nabc\r\n0\r\n\r\n"),
        ("chunk-size-space", b"3 \r\nabc\r\n0\r\n\r\n"),
        ("chunk-ext-garbage", b"3;\0\r\nabc\r\n0\r\n\r\n"),
        ("chunk-missing-crlf", b"3\r\nabcX0\r\n\r\n"),
        ("chunk-too-long", b"3\r\nabcdef\r\n0\r\n\r\n"),
        ("chunk-bare-lf", b"3\nabc\n0\n\n"),
    ):
        add(name, _req("POST", sync, ["transfer-encoding: chunked"], chunk))
    add("chunked-ok", _req("POST", sync, ["transfer-encoding: chunked"], b"3\r\nabc\r\n0\r\n\r\n"), "2xx")
    add("body-on-get", _req("GET", sync, ["content-length: 3"], b"abc"), "2xx")
    add("body-stops", _req("POST", sync, ["content-length: 100"], b"partial"), "408")
    add("chunked-body-stops", _req("POST", sync, ["transfer-encoding: chunked"], b"5\r\nhello\r\n"), "408")
    # queue and falemu's own routes
    add("queue-submit-ok", _req("POST", queue, ["content-length: 2", "content-type: application/json"], b"{}"), "2xx")
    add("queue-bad-json", _req("POST", queue, ["content-length: 5"], b"{nope"), "any")
    add("queue-priority-weird", _req("POST", queue, ["x-fal-queue-priority: \x00urgent", "content-length: 0"]), "any")
    add("queue-webhook-garbage", _req("POST", queue + "?fal_webhook=%00%zz", ["content-length: 0"]), "any")
    add("queue-status-unknown", _req("GET", f"{requests}/nope/status"), "404")
    add("queue-status-empty-id", _req("GET", f"{requests}//status"), "any")
    add("queue-status-logs-garbage", _req("GET", f"{requests}/nope/status?logs=%ff%00"), "404")
    add("queue-status-dotdot", _req("GET", f"{requests}/../../status"), "any")
    add("queue-result-huge-id", _req("GET", f"{requests}/{'x' * 8000}"), "404")
    add("queue-cancel-unknown", _req("PUT", f"{requests}/nope/cancel"), "404")
    add("queue-stream-unknown", _req("GET", f"{requests}/nope/status/stream"), "404")
    add("queue-bare", _req("GET", "/queue"), "404")
    add("queue-wrong-method", _req("DELETE", f"{requests}/nope"), "any")
    add("health", _req("GET", "/_falemu/health"), "2xx")
    add("admin-no-token", _req("GET", "/_falemu/ps"))
    add("admin-bad-token", _req("GET", "/_falemu/ps", ["x-falemu-admin-token: nope"]))
    add("admin-nul-token", _req("GET", "/_falemu/events", ["x-falemu-admin-token: a\0b"]))
    token = [f"x-falemu-admin-token: {admin}"]
    add("admin-logs-bad-tail", _req("GET", "/_falemu/logs?app=zz&tail=-5&follow=maybe", token))
    add("admin-events-bad-tail", _req("GET", "/_falemu/events?tail=abc", token), "any")
    add("admin-unknown", _req("GET", "/_falemu/nope"), "404")
    add("cdn-traversal", _req("GET", "/_falemu/cdn/files/../../../etc/passwd"), "any")
    add("cdn-bad-range", _req("GET", "/_falemu/cdn/files/a/b.txt", ["range: bytes=9-1,zz"]), "any")
    initiate = "/_falemu/rest/storage/upload/initiate"
    add("rest-initiate-junk", _req("POST", initiate, ["content-length: 3"], b"{{{"), "any")
    # connection misuse
    # The first request is valid: its answer should come before the 400 for what follows it.
    add("pipelined-then-garbage", _req("GET", sync) + b"garbage\r\n\r\n", "2xx", answers=2, protocol=True)
    add("pipelined-50", _req("GET", sync) * 50, "2xx", answers=50)
    add("pipelined-queue-and-sync", _req("GET", f"{requests}/nope/status") + _req("GET", sync), "any", answers=2)
    add("byte-at-a-time", [bytes([b]) for b in _req("GET", sync)], "2xx")
    add("half-close-after-request", _req("GET", sync), "any", then="half-close")
    add("reset-mid-body", _req("POST", sync, ["content-length: 1000"], b"x" * 10), "any", then="reset")
    add("reset-after-request", _req("POST", f"{sync}?sleep=0.5", ["content-length: 2"], b"{}"), "any", then="reset")
    add("half-head", _req("GET", sync)[:-2], "4xx", protocol=True, wait=_HEAD_WAIT)  # a head-read timeout
    return cases


def random_cases(t: Target, count: int, seed: int) -> list[Case]:
    """``count`` mutations of valid requests (deterministic for a seed)."""
    rng = random.Random(seed)
    sync = f"/{t.owner}/{t.app}/echo"
    seeds = [
        _req("GET", sync + "?a=1"),
        _req("POST", sync, ["content-type: application/json", "content-length: 9"], b'{"n": 12}'),
        _req("POST", sync, ["transfer-encoding: chunked"], b"4\r\nabcd\r\n0\r\n\r\n"),
        _req("POST", f"/queue/{t.owner}/{t.app}/echo", ["content-length: 2"], b"{}"),
        _req("GET", f"/queue/{t.owner}/{t.app}/requests/abc/status?logs=1"),
        _req("GET", "/_falemu/health"),
        _req("GET", sync, [f"authorization: Key {t.key or 'a:b'}", "x-fal-request-timeout: 30"]),
    ]
    inserts = [b"\r", b"\n", b"\0", b" ", b":", b"\t", b"\xff", b"%", b"\r\n", b"\r\n\r\n", b"0", b"-", b","]
    cases = []
    for i in range(count):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 3)):
            pos = rng.randrange(len(data) + 1)
            op = rng.randrange(5)
            if op == 0 and data:
                data[min(pos, len(data) - 1)] = rng.randrange(256)
            elif op == 1:
                data[pos:pos] = rng.choice(inserts)
            elif op == 2:
                del data[pos : pos + rng.randint(1, 8)]
            elif op == 3:
                lines = bytes(data).split(b"\r\n")
                if len(lines) > 2:
                    j = rng.randrange(1, len(lines) - 1)
                    lines.insert(j, lines[j])
                    data = bytearray(b"\r\n".join(lines))
            else:
                del data[pos:]
        cases.append(Case(f"random-{seed}-{i}", bytes(data), "any"))
    return cases


# -- running one case ---------------------------------------------------------------------------------------


def _classify(expect: str, statuses: list[int], closed: bool) -> bool:
    if expect == "any":
        return True
    statuses = [s for s in statuses if s >= 200]  # an interim 100 Continue does not count
    if not statuses:
        return expect == "4xx" and closed  # refused by closing the connection: acceptable for garbage
    first = statuses[0]
    if expect in ("2xx", "4xx"):
        return first // 100 == int(expect[0])
    return str(first) == expect


def run_case(t: Target, case: Case, timeout: float) -> Result:
    started = time.monotonic()
    data = b""
    closed = False
    error = ""
    try:
        with socket.create_connection((t.host, t.port), timeout=timeout) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                if isinstance(case.data, list):
                    for part in case.data:
                        sock.sendall(part)
                        time.sleep(0.01)
                else:
                    sock.sendall(case.data)
            except OSError as exc:
                error = f"send: {exc}"
            if case.then == "reset":
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
                return Result(case.name, [], True, time.monotonic() - started)
            if case.then == "half-close":
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_WR)
            deadline = started + timeout
            while time.monotonic() < deadline:
                quiet = len(_STATUS.findall(data)) >= case.answers
                sock.settimeout(max(0.01, min(0.25 if quiet else timeout, deadline - time.monotonic())))
                try:
                    chunk = sock.recv(65536)
                except TimeoutError:
                    if quiet:
                        break
                    continue
                except OSError as exc:
                    error = error or f"recv: {exc}"
                    closed = True
                    break
                if not chunk:
                    closed = True
                    break
                data += chunk
    except OSError as exc:
        error = f"connect: {exc}"
    statuses = [int(s) for s in _STATUS.findall(data)]
    crash = any(s == 500 for s in statuses) and _CRASH_BODY in data
    by_runner = b"\r\nserver: basehttp/" in data.lower()
    expected = _classify(case.expect, statuses, closed)
    if case.protocol and by_runner:
        expected = False  # the gateway passed it on: a runner's own limit answered, not the gateway's
    return Result(
        case.name,
        statuses,
        closed,
        round(time.monotonic() - started, 3),
        crash=crash,
        expected=expected,
        protocol=case.protocol,
        by_runner=by_runner,
        error=error,
    )


# -- the well-behaved client and the idle sockets -------------------------------------------------------------


class Bystander(threading.Thread):
    """A well-behaved caller: a sync request every 20 ms and a queued one every 10th round, checked."""

    def __init__(self, t: Target) -> None:
        super().__init__(name="fuzz-bystander", daemon=True)
        self.t = t
        self.ok = 0
        self.failures: list[str] = []
        self._halt = threading.Event()

    def run(self) -> None:
        import httpx

        base = f"http://{self.t.host}:{self.t.port}"
        headers = {"authorization": f"Key {self.t.key}"} if self.t.key else {}
        with httpx.Client(timeout=30, headers=headers) as client:
            n = 0
            while not self._halt.is_set():
                n += 1
                try:
                    got = client.post(f"{base}/{self.t.owner}/{self.t.app}/echo", json={"n": n})
                    if got.status_code != 200 or got.json()["body"] != {"n": n}:
                        self.failures.append(f"sync: {got.status_code} {got.text[:200]}")
                    else:
                        self.ok += 1
                    if n % 10 == 0:
                        submitted = client.post(f"{base}/queue/{self.t.owner}/{self.t.app}/echo", json={"q": n})
                        if submitted.status_code != 200:
                            self.failures.append(f"queue: {submitted.status_code} {submitted.text[:200]}")
                        else:
                            self.ok += 1
                except Exception as exc:
                    self.failures.append(f"{type(exc).__name__}: {exc}")
                self._halt.wait(0.02)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=60)


@contextlib.contextmanager
def idle_sockets(t: Target, idle: int, half_open: int) -> Iterator[list[socket.socket]]:
    """``idle`` connections that never send a byte and ``half_open`` that send half a head, held open."""
    socks: list[socket.socket] = []
    try:
        for i in range(idle + half_open):
            sock = socket.create_connection((t.host, t.port), timeout=10)
            if i >= idle:
                sock.sendall(b"POST /" + t.owner.encode() + b"/" + t.app.encode() + b"/echo HTTP/1.1\r\nhost: x\r\n")
            socks.append(sock)
        yield socks
    finally:
        for sock in socks:
            sock.close()


def _closed_by_peer(sock: socket.socket) -> bool:
    """Whether the gateway answered or closed a held connection (its bytes are only peeked at)."""
    sock.setblocking(False)
    try:
        sock.recv(65536, socket.MSG_PEEK)
    except BlockingIOError:
        return False
    except OSError:
        return True
    return True


# -- the gateway under test ---------------------------------------------------------------------------------


class ErrorLog(logging.Handler):
    """Errors the gateway's server, event loop or falemu logged: each one is a crash."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = f"{record.name}: {record.getMessage()[:300]}"
        if record.exc_info and record.exc_info[1] is not None:
            import traceback

            where = traceback.extract_tb(record.exc_info[2])[-3:]
            text += f" ({type(record.exc_info[1]).__name__}: {record.exc_info[1]} at "
            text += " < ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in reversed(where)) + ")"
        self.records.append(text)


@contextlib.contextmanager
def local_gateway(home: Path, body_timeout: float = 1.0) -> Iterator[Target]:
    """A gateway as ``falemu up`` serves it, with in-process runners, its home under ``home``."""
    from falemu.config.model import AppConfig, AppShape, Project, ScalingConfig
    from falemu.config.settings import Settings
    from falemu.emulator import Emulator
    from falemu.events import RunnerLog
    from falemu.runtime.fake import FakeRuntime

    scaling = ScalingConfig(min_concurrency=1, max_concurrency=2, keep_alive=300, max_multiplexing=4)
    apps = {
        name: AppConfig(
            name=name,
            alias=name,
            shape=AppShape.DIRECT_SERVER,
            project_root=home,
            exposed_port=8000,
            auth=auth,
            scaling=scaling,
        )
        for name, auth in (("open", "public"), ("secret", "private"))
    }
    project = Project(root=home, pyproject=home / "pyproject.toml", apps=apps)
    settings = Settings(port=0, data_dir=home / "data", files_dir=home / "files", body_timeout=body_timeout)
    with Emulator(project, settings, runtime=FakeRuntime()) as emulator:
        lines: list[str] = []

        def on_event(event: Any) -> None:
            if isinstance(event, RunnerLog) and "smuggled" in event.line:
                lines.append(event.line)

        emulator.events.subscribe(on_event)
        url = urlsplit(emulator.base_url)
        yield Target(
            host=url.hostname or "127.0.0.1",
            port=url.port or 80,
            owner=settings.owner,
            app="open",
            private="secret",
            key=emulator.api_key,
            admin_token=emulator.admin_token,
            smuggled=lambda: list(lines),
        )


# -- the run -------------------------------------------------------------------------------------------------


@dataclass
class Report:
    results: list[Result]
    crashes: list[str]
    server_errors: list[str]
    smuggled: list[str]
    bystander_ok: int
    bystander_failures: list[str]
    protocol_unmet: list[str]
    unexpected: list[str]
    idle_closed: int
    idle_total: int
    alive_at_end: bool
    seconds: float

    @property
    def passed(self) -> bool:
        failures = self.crashes or self.server_errors or self.smuggled or self.bystander_failures
        return not failures and self.alive_at_end


def run(
    t: Target,
    cases: list[Case],
    *,
    workers: int = 16,
    case_timeout: float = 5.0,
    idle: int = 32,
    half_open: int = 8,
    budget: float = 120.0,
    errors: ErrorLog | None = None,
    long: bool = True,
) -> Report:
    """Run ``cases`` against ``t``; with ``long`` False, cases that need longer than ``case_timeout`` get
    only that (their answer is then left unchecked as a [protocol] case)."""
    if t.host not in ("127.0.0.1", "::1", "localhost"):
        raise SystemExit("http_fuzz only targets loopback addresses")
    started = time.monotonic()
    bystander = Bystander(t)
    bystander.start()
    results: list[Result] = []
    with idle_sockets(t, idle, half_open) as held:
        with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
            pending = [
                pool.submit(run_case, t, case, max(case_timeout, case.wait) if long else case_timeout) for case in cases
            ]
            for future in pending:
                remaining = budget - (time.monotonic() - started)
                try:
                    results.append(future.result(timeout=max(0.1, remaining)))
                except concurrent.futures.TimeoutError:
                    break
            for future in pending:
                future.cancel()
        idle_closed = sum(1 for sock in held if _closed_by_peer(sock))
    time.sleep(0.3)  # the last requests' bookkeeping
    bystander.stop()
    alive = run_case(t, Case("health-at-end", _req("GET", "/_falemu/health"), "2xx"), 10).statuses[:1] == [200]
    by_name = {c.name: c for c in cases}
    server_errors = [f"{r.name}: {r.statuses}" for r in results if any(s >= 500 for s in r.statuses) and not r.crash]
    crashes = [f"{r.name}: uncaught exception (500)" for r in results if r.crash]
    crashes += errors.records if errors is not None else []
    markers = t.smuggled()
    smuggled = [c.name for c in cases if c.marker and any(c.marker in line for line in markers)]

    def seen(r: Result) -> str:
        got = r.statuses or ("closed" if r.closed else "no answer")
        return f"{r.name}: {got} (expected {by_name[r.name].expect}{', answered by a runner' if r.by_runner else ''})"

    unexpected = [seen(r) for r in results if not r.expected and not r.protocol]
    protocol_unmet = [seen(r) for r in results if not r.expected and r.protocol]
    if idle and not idle_closed:
        protocol_unmet.append(f"idle connections: 0 of {idle + half_open} closed by the gateway during the run")
    return Report(
        results=results,
        crashes=crashes,
        server_errors=server_errors,
        smuggled=smuggled,
        bystander_ok=bystander.ok,
        bystander_failures=bystander.failures,
        protocol_unmet=protocol_unmet,
        unexpected=unexpected,
        idle_closed=idle_closed,
        idle_total=idle + half_open,
        alive_at_end=alive,
        seconds=round(time.monotonic() - started, 1),
    )


def print_report(report: Report, cases: int) -> None:
    print(f"cases: {len(report.results)} of {cases} run in {report.seconds} s")
    print(f"gateway crashes: {len(report.crashes)}")
    for line in report.crashes[:20]:
        print(f"  {line}")
    print(f"5xx answers to client mistakes: {len(report.server_errors)}")
    for line in report.server_errors[:20]:
        print(f"  {line}")
    print(f"smuggled requests that reached a runner: {len(report.smuggled)} {report.smuggled or ''}")
    print(
        f"well-behaved client: {report.bystander_ok} requests served, {len(report.bystander_failures)} failed"
        + (f" ({report.bystander_failures[:3]})" if report.bystander_failures else "")
    )
    print(f"gateway answering at the end: {'yes' if report.alive_at_end else 'NO'}")
    print(f"idle and half-open connections closed by the gateway: {report.idle_closed} of {report.idle_total}")
    print(f"answers other than a strict gateway's (not failures): {len(report.unexpected)}")
    for line in report.unexpected:
        print(f"  {line}")
    print(f"[protocol] cases not yet answered as expected: {len(report.protocol_unmet)}")
    for line in report.protocol_unmet:
        print(f"  {line}")
    print("PASS" if report.passed else "FAIL")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="a running falemu up on loopback (default: start one in-process)")
    parser.add_argument("--app", help="a public app of that falemu up (with --url)")
    parser.add_argument("--owner", default="local", help="its owner (with --url)")
    parser.add_argument("--key", help="a key of that falemu up (with --url; default: FAL_KEY)")
    parser.add_argument("--admin-token", help="its admin token (with --url; from its state file)")
    parser.add_argument("--random", type=int, default=400, help="random mutations of valid requests")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--idle", type=int, default=64, help="connections held open without a byte")
    parser.add_argument("--half-open", type=int, default=8, help="connections held open with half a head")
    parser.add_argument("--workers", type=int, default=16, help="cases run at once")
    parser.add_argument("--case-timeout", type=float, default=5.0, help="seconds one connection may take")
    parser.add_argument("--seconds", type=float, default=120.0, help="the whole run's time budget")
    parser.add_argument(
        "--short", action="store_true", help="no case waits past --case-timeout (head-read timeouts unchecked)"
    )
    parser.add_argument(
        "--strict-protocol", action="store_true", help="also fail [protocol] cases not answered as expected"
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    errors = ErrorLog()
    with contextlib.ExitStack() as stack:
        if args.url:
            url = urlsplit(args.url)
            if not args.app:
                parser.error("--url needs --app")
            key = args.key or os.environ.get("FAL_KEY")
            target = Target(
                url.hostname or "", url.port or 80, args.owner, args.app, key=key, admin_token=args.admin_token
            )
            log_errors: ErrorLog | None = None
        else:
            home = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="falemu-fuzz-")))
            for var, sub in (("XDG_CONFIG_HOME", "config"), ("XDG_CACHE_HOME", "cache"), ("XDG_RUNTIME_DIR", "run")):
                os.environ[var] = str(home / sub)
            os.environ.pop("FALEMU_CONFIG_DIR", None)
            logging.getLogger().addHandler(errors)
            logging.getLogger("uvicorn.error").setLevel(logging.ERROR)  # "Invalid HTTP request" is expected here
            target = stack.enter_context(local_gateway(home))
            log_errors = errors
        cases = static_cases(target) + random_cases(target, args.random, args.seed)
        report = run(
            target,
            cases,
            workers=args.workers,
            case_timeout=args.case_timeout,
            idle=args.idle,
            half_open=args.half_open,
            budget=args.seconds,
            errors=log_errors,
            long=not args.short,
        )
    if args.json:
        data = asdict(report)
        data["passed"] = report.passed
        print(json.dumps(data, indent=2))
    else:
        print_report(report, len(cases))
    failed = not report.passed or (args.strict_protocol and report.protocol_unmet)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
