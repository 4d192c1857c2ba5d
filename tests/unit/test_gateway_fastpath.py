"""The sync API's fast path (falemu.gateway.fastpath): which requests take it, and what only it does.

Everything the sync API answers is also checked against both protocols by test_gateway.py (its
``harness`` fixture runs each test with and without the fast path); these tests cover the choice of
path and the connection-level behaviour of the fast path itself, over real sockets.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import h11
import httpx
import pytest
from gateway_support import app_config, wait_for

from falemu.events import RequestCompleted
from falemu.gateway.harness import GatewayHarness
from falemu.gateway.keys import KeyStore
from falemu.gateway.static_pool import StaticPool
from falemu.runtime.base import Runner


@pytest.fixture
def fast(keys: KeyStore) -> Iterator[GatewayHarness]:
    h = GatewayHarness(keys)  # falemu's own protocol, as `falemu up` serves it
    yield h
    h.close()


def fast_count(harness: GatewayHarness) -> int:
    assert harness.app is not None
    return harness.app.fast_requests


def read_responses(sock: socket.socket, count: int) -> list[tuple[int, dict[bytes, bytes], bytes]]:
    """``count`` HTTP/1.1 responses from ``sock``, parsed by h11."""
    conn = h11.Connection(h11.CLIENT)
    # h11 needs to know it sent requests; pipelined GETs with no body are enough to set its state.
    out: list[tuple[int, dict[bytes, bytes], bytes]] = []
    status, headers, body = 0, {}, b""
    while len(out) < count:
        if conn.our_state is h11.IDLE:
            conn.send(h11.Request(method="GET", target="/", headers=[("host", "x")]))
            conn.send(h11.EndOfMessage())
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = sock.recv(65536)
            conn.receive_data(data)
            if not data:
                break
        elif isinstance(event, h11.Response):
            status, headers, body = event.status_code, dict(event.headers), b""
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            out.append((status, headers, body))
            if len(out) < count:
                conn.start_next_cycle()
    return out


# -- which requests take the fast path ---------------------------------------------------------------------


def test_plain_sync_requests_take_the_fast_path(fast: GatewayHarness, client: httpx.Client) -> None:
    url = fast.serve([app_config("echo")])
    got = client.get(f"{url}/local/echo/items?q=a%20b", headers={"x-fal-endpoint": "spoof"})
    assert got.status_code == 200
    echo = got.json()
    assert (echo["path"], echo["query"]) == ("/items", "q=a%20b")
    assert echo["headers"]["x-fal-endpoint"] == "local/echo/items"
    assert got.headers["x-fal-request-id"] == echo["headers"]["x-fal-request-id"]
    posted = client.post(f"{url}/local/echo/run", json={"n": 1})
    assert json.loads(posted.json()["body"]) == {"n": 1}
    assert fast_count(fast) == 2


def test_unusual_requests_fall_back_to_the_asgi_path_and_still_work(fast: GatewayHarness, client: httpx.Client) -> None:
    url = fast.serve([app_config("echo")])

    def chunks() -> Iterator[bytes]:
        yield b"part one, "
        yield b"part two"

    streamed = client.post(f"{url}/local/echo/upload", content=chunks())  # chunked: length unknown up front
    assert streamed.json()["body"] == "part one, part two"
    encoded = client.get(f"{url}/local/echo/a%2Fb")  # routed by its decoded form
    assert encoded.json()["raw_path"] == "/a%2Fb"
    big = "x" * (300 * 1024)
    assert client.post(f"{url}/local/echo/big", content=big).json()["body"] == big
    unknown = client.get(f"{url}/local/nope/x")
    assert unknown.status_code == 404
    submitted = client.post(f"{url}/queue/local/echo/run", json={})
    assert submitted.status_code == 200
    assert fast_count(fast) == 0


def test_a_request_that_must_wait_for_a_runner_waits_on_the_fast_path(
    fast: GatewayHarness, client: httpx.Client
) -> None:
    url = fast.serve([app_config("busy", max_multiplexing=1)])
    pool = fast.pools["busy"]
    holder = threading.Thread(target=lambda: client.post(f"{url}/local/busy/slow?s=1"))
    holder.start()
    wait_for(lambda: sum(info.in_flight for info in pool.runners()) == 1)
    with httpx.Client(timeout=20) as other:
        second = other.get(f"{url}/local/busy/after")
    holder.join()
    assert second.status_code == 200
    assert fast_count(fast) == 2  # the runner is leased once the body is in; then the exchange waits for one
    assert [runner for _, runner in pool.acquired] == ["busy-0", "busy-0"]


# -- connection behaviour ------------------------------------------------------------------------------------


def test_pipelined_requests_are_answered_in_order(fast: GatewayHarness) -> None:
    url = fast.serve([app_config("echo")])
    port = int(url.rsplit(":", 1)[1])
    requests = (
        b"GET /local/echo/one HTTP/1.1\r\nhost: x\r\n\r\n"
        b"POST /local/echo/two HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\n\r\nabc"
        b"POST /local/echo/three HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n3\r\nxyz\r\n0\r\n\r\n"
        b"GET /local/echo/four HTTP/1.1\r\nhost: x\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(requests)
        answers = read_responses(sock, 4)
    paths = [json.loads(body)["path"] for _, _, body in answers]
    assert paths == ["/one", "/two", "/three", "/four"]
    assert [json.loads(body)["body"] for _, _, body in answers][1:3] == ["abc", "xyz"]
    assert len({headers[b"x-fal-request-id"] for _, headers, _ in answers}) == 4
    assert fast_count(fast) >= 1


def test_idle_connections_close_after_the_keep_alive_timeout_and_busy_ones_do_not(harness: GatewayHarness) -> None:
    url = harness.serve([app_config("echo")], timeout_keep_alive=1)
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        for _ in range(5):  # a request every 0.4 s for 2 s: never idle for the 1 s limit
            sock.sendall(b"GET /local/echo/a HTTP/1.1\r\nhost: x\r\n\r\n")
            assert read_responses(sock, 1)[0][0] == 200
            time.sleep(0.4)
        sock.sendall(b"GET /local/echo/sleep?s=2.5 HTTP/1.1\r\nhost: x\r\n\r\n")  # longer than the limit
        assert read_responses(sock, 1)[0][0] == 200
        idle_from = time.monotonic()
        assert sock.recv(1) == b""  # then idle: the gateway closes the connection
        assert time.monotonic() - idle_from >= 0.5  # and not right after the answer: at the 1 s limit


def test_a_websocket_upgraded_after_requests_on_its_connection_outlives_the_keep_alive_limit(
    harness: GatewayHarness,
) -> None:
    from websockets.sync.client import connect

    url = harness.serve([app_config("live")], timeout_keep_alive=1)
    port = int(url.rsplit(":", 1)[1])
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(b"GET /local/live/a HTTP/1.1\r\nhost: x\r\n\r\n")
    assert read_responses(sock, 1)[0][0] == 200
    with connect(f"ws://127.0.0.1:{port}/local/live/ws", sock=sock) as ws:  # the same connection, upgraded
        json.loads(ws.recv())
        time.sleep(2.5)  # quiet for longer than the HTTP keep-alive limit
        ws.send("still there")
        assert ws.recv(timeout=10) == "live-0: still there"


def test_connection_close_and_http10_end_the_connection_after_the_answer(fast: GatewayHarness) -> None:
    url = fast.serve([app_config("echo")])
    port = int(url.rsplit(":", 1)[1])
    for request in (
        b"GET /local/echo/a HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        b"GET /local/echo/b HTTP/1.0\r\nhost: x\r\n\r\n",
    ):
        with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
            sock.sendall(request)
            data = b""
            while chunk := sock.recv(65536):  # returns b"" only when the gateway closes the connection
                data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.startswith((b"HTTP/1.1 200", b"HTTP/1.0 200"))
        assert json.loads(body)["path"] in ("/a", "/b")


def test_caller_leaving_mid_request_frees_the_runner_at_once(fast: GatewayHarness) -> None:
    url = fast.serve([app_config("slow")])
    port = int(url.rsplit(":", 1)[1])
    pool = fast.pools["slow"]
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(b"POST /local/slow/slow?s=30 HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n")
        wait_for(lambda: sum(info.in_flight for info in pool.runners()) == 1)
    wait_for(lambda: sum(info.in_flight for info in pool.runners()) == 0)  # long before the runner's 30 s
    assert pool.outcomes[-1][1] == "error"
    wait_for(lambda: bool(fast.events_of(RequestCompleted)))
    assert fast.events_of(RequestCompleted)[-1].status_code == 499
    assert fast_count(fast) == 1


def test_large_answers_stream_through_in_parts(fast: GatewayHarness, client: httpx.Client) -> None:
    url = fast.serve([app_config("echo")])
    body = "y" * (200 * 1024)  # fast path in; the echo (with JSON around it) comes back over many reads
    got = client.post(f"{url}/local/echo/big", content=body)
    assert got.json()["body"] == body
    with client.stream("POST", f"{url}/local/echo/stream?n=50") as sse:
        assert sse.headers["content-type"] == "text/event-stream"
        events = [line for line in sse.iter_lines() if line.startswith("data:")]
    assert [json.loads(line[5:])["i"] for line in events] == list(range(50))
    assert fast_count(fast) == 2


class _ForgetfulRunner:
    """A raw HTTP runner that answers the first request on a connection, then drops the connection on
    the next one without a byte: a kept-alive socket the runner closed just as the gateway reused it."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._stop = False
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            body = b'{"ok":true}'
            conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n" + body)
            conn.recv(65536)  # the next request on this connection: closed unanswered

    def close(self) -> None:
        self._stop = True
        self.sock.close()


def test_a_reused_runner_connection_that_died_is_retried_once_on_a_new_one(
    fast: GatewayHarness, client: httpx.Client
) -> None:
    runner = _ForgetfulRunner()
    try:
        url = fast.serve([app_config("flaky")])
        fast.pools["flaky"]._slots[0].runner = Runner(id="flaky-0", app="flaky", host="127.0.0.1", port=runner.port)
        first = client.get(f"{url}/local/flaky/a")
        second = client.get(f"{url}/local/flaky/b")
        assert (first.status_code, second.status_code) == (200, 200)
        assert runner.connections == 2  # the second request went out again on a fresh connection
        assert fast_count(fast) == 2
    finally:
        runner.close()


def test_a_post_goes_out_again_only_with_an_idempotency_key(harness: GatewayHarness, client: httpx.Client) -> None:
    runner = _ForgetfulRunner()  # it drops each connection's second request unanswered, as a crash would
    try:
        url = harness.serve([app_config("flaky")])
        harness.pools["flaky"]._slots[0].runner = Runner(id="flaky-0", app="flaky", host="127.0.0.1", port=runner.port)
        assert client.post(f"{url}/local/flaky/a", json={}).status_code == 200
        keyed = client.post(f"{url}/local/flaky/b", json={}, headers={"Idempotency-Key": "b-1"})
        assert keyed.status_code == 200  # safe to run twice: sent again on a fresh connection
        assert runner.connections == 2
        plain = client.post(f"{url}/local/flaky/c", json={})
        assert plain.status_code == 503  # it may have run: not sent again
        assert plain.json()["error_type"] == "runner_disconnected"
        assert runner.connections == 2
    finally:
        runner.close()


def test_a_runner_that_refuses_connections_is_503(fast: GatewayHarness, client: httpx.Client) -> None:
    url = fast.serve([app_config("gone")])
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    pool: StaticPool = fast.pools["gone"]
    pool._slots[0].runner = Runner(id="gone-0", app="gone", host="127.0.0.1", port=free)
    got = client.get(f"{url}/local/gone/x")
    assert got.status_code == 503
    assert got.json()["error_type"] == "runner_connection_refused"
    assert got.headers["x-fal-error-type"] == "runner_connection_refused"
    wait_for(lambda: bool(pool.outcomes))  # released just after the answer left, on the gateway's thread
    assert pool.outcomes[-1][1] == "replace"
    assert fast_count(fast) == 1


# -- back-pressure, with the caller's side simulated -------------------------------------------------------


class _SlowCaller:
    """The caller's connection as an exchange sees it, with its write buffer full on demand."""

    def __init__(self, *, paused_from_start: bool = False, pause_on_last_write: bool = False) -> None:
        self.write_paused = paused_from_start
        self.pause_on_last_write = pause_on_last_write
        self.sent: list[bytes] = []
        self.done = threading.Event()
        self.exchange: Any = None
        self.default_headers: list[tuple[bytes, bytes]] = []
        self.transport = self

    def write(self, data: bytes) -> None:
        self.sent.append(bytes(data))

    def close(self) -> None:
        pass

    def send_now(self, data: bytes) -> None:
        self.sent.append(data)
        if self.pause_on_last_write:  # the kernel buffer filled with the answer's last bytes
            self.write_paused = True
            self.exchange.pause_reading_runner()

    def exchange_done(self, exchange: Any) -> None:
        self.done.set()

    def time_limit(self, seconds: float) -> None:
        pass


def _exchange_through(harness: GatewayHarness, caller: _SlowCaller, path: bytes) -> Any:
    from falemu.gateway import fastpath

    assert harness.app is not None
    exchange = fastpath.begin(harness.app, caller, b"GET", path, [(b"host", b"x")], True)
    assert exchange is not None
    caller.exchange = exchange
    return exchange


def test_a_runner_connection_paused_for_a_slow_caller_is_reading_again_when_reused(fast: GatewayHarness) -> None:
    import asyncio

    fast.serve([app_config("echo")])
    assert fast.app is not None
    gateway = fast.app

    async def main() -> None:
        caller = _SlowCaller(pause_on_last_write=True)
        _exchange_through(fast, caller, b"/local/echo/one").request_complete()
        await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(None, caller.done.wait), 10)
        (idle,) = [c for conns in gateway.upstream._idle.values() for c in conns]
        assert idle.transport is not None
        assert idle.transport.is_reading()
        # A slow caller from the start: the runner is not read until the caller catches up.
        slow = _SlowCaller(paused_from_start=True)
        exchange = _exchange_through(fast, slow, b"/local/echo/two")
        exchange.request_complete()
        await asyncio.sleep(0.3)
        assert not slow.done.is_set()
        assert slow.sent == []
        exchange.resume_reading_runner()
        await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(None, slow.done.wait), 10)
        assert json.loads(slow.sent[-1].partition(b"\r\n\r\n")[2])["path"] == "/two"
        await gateway.upstream.aclose()

    asyncio.run(main())
    assert [o for _, o in fast.pools["echo"].outcomes] == ["ok", "ok"]


def test_an_error_answer_to_head_has_no_body(fast: GatewayHarness) -> None:
    url = fast.serve([app_config("gone")])
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    fast.pools["gone"]._slots[0].runner = Runner(id="gone-0", app="gone", host="127.0.0.1", port=free)
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(b"HEAD /local/gone/x HTTP/1.1\r\nhost: x\r\n\r\nGET /local/nope/y HTTP/1.1\r\nhost: x\r\n\r\n")
        data = b""
        while data.count(b"HTTP/1.1 ") < 2 or not data.endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    first, _, rest = data.partition(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 503")
    assert rest.startswith(b"HTTP/1.1 404")  # no body bytes between the two answers
