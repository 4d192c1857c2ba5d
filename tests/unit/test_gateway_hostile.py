"""Hostile callers on the sync API, on both paths (the ``harness`` fixture runs each test with and without
the fast path): hung-up and stalled uploads, forged headers, disguised keys, bad timeouts, encoded slashes.

A request whose caller is gone must reach no runner; a stalled or aborted upload must hold or cost no
runner; what the caller cannot set (``x-fal-*``, a fal key, the framing) stays the gateway's.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator

import httpx
import pytest
from gateway_support import app_config, wait_for

from falemu.config.settings import Settings
from falemu.events import RequestCompleted
from falemu.gateway.harness import GatewayHarness
from falemu.gateway.keys import KeyStore, looks_like_key, parse_authorization


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def _connect(url: str) -> socket.socket:
    return socket.create_connection(("127.0.0.1", _port(url)), timeout=20)


def _answer(sock: socket.socket) -> bytes:
    """Everything the gateway sends until it closes the connection."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def _forwarded(harness: GatewayHarness, runner: str) -> list[str]:
    """The paths of the requests a runner saw."""
    return [call["path"] for call in harness.probes[runner].calls if not call["path"].startswith("/_probe")]


@pytest.fixture
def held(harness: GatewayHarness, client: httpx.Client) -> Iterator[tuple[str, threading.Event]]:
    """An app with one runner taking one request at a time, held busy by an open stream until the event is
    set: the next request must wait for the runner."""
    url = harness.serve([app_config("echo", max_multiplexing=1)])
    runner_url = f"http://127.0.0.1:{harness.servers[0].port}"
    release = threading.Event()

    def hold() -> None:
        with httpx.stream("POST", f"{url}/local/echo/stream?n=2&gate=held", timeout=30) as resp:
            resp.read()

    holder = threading.Thread(target=hold)
    holder.start()
    wait_for(lambda: harness.pools["echo"].acquired)
    try:
        yield url, release
    finally:
        client.post(f"{runner_url}/_probe/release/held")
        holder.join(timeout=30)


# -- a caller that is gone reaches no runner -------------------------------------------------------------


def test_a_caller_that_hangs_up_while_waiting_for_a_runner_is_never_forwarded(
    harness: GatewayHarness, held: tuple[str, threading.Event], client: httpx.Client
) -> None:
    url, _ = held
    pool = harness.pools["echo"]
    with _connect(url) as sock:
        sock.sendall(b"POST /local/echo/gone HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\nhello")
        wait_for(lambda: len(pool._waiters) == 1)  # it waits for the busy runner
    wait_for(lambda: not pool._waiters)  # the gateway noticed the hang-up and stopped waiting
    runner_url = f"http://127.0.0.1:{harness.servers[0].port}"
    client.post(f"{runner_url}/_probe/release/held")
    after = client.post(f"{url}/local/echo/after", content=b"x")
    assert after.status_code == 200
    assert _forwarded(harness, "echo-0") == ["/stream", "/after"]  # never /gone, with or without its body
    assert [runner for _, runner in pool.acquired] == ["echo-0", "echo-0"]
    assert pool.replaced == []
    gone = [e for e in harness.events_of(RequestCompleted) if e.endpoint == "/gone"]
    assert [(e.runner, e.status_code, e.error_type) for e in gone] == [("", 499, "client_disconnected")]


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"content-length: 100000\r\n\r\n" + b"x" * 40_000,  # a body the fast path could take, cut short
        b"content-length: 600000\r\n\r\n" + b"x" * 300_000,  # a large one, cut short
        b"transfer-encoding: chunked\r\n\r\n5\r\nhello\r\n",  # chunked, without its last chunk
        b"transfer-encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",  # a malformed chunk size
    ],
    ids=["short-body", "short-large-body", "unfinished-chunked", "malformed-chunked"],
)
def test_an_upload_the_caller_abandons_reaches_no_runner_and_costs_none(
    harness: GatewayHarness, client: httpx.Client, request_bytes: bytes
) -> None:
    url = harness.serve([app_config("echo", max_multiplexing=1)])
    with _connect(url) as sock:
        sock.sendall(b"POST /local/echo/upload HTTP/1.1\r\nhost: x\r\n" + request_bytes)
        if b"zz" in request_bytes:
            assert _answer(sock).startswith(b"HTTP/1.1 400 ")  # the server refuses it and hangs up
    after = client.post(f"{url}/local/echo/after", content=b"x")  # queued behind it if it had taken the runner
    assert after.json()["runner"] == "echo-0"  # the same runner: not replaced as if it had failed
    assert _forwarded(harness, "echo-0") == ["/after"]
    pool = harness.pools["echo"]
    assert pool.replaced == []
    assert len(pool.acquired) == 1
    wait_for(lambda: len(harness.events_of(RequestCompleted)) == 2)
    done = {(e.runner, e.status_code, e.error_type) for e in harness.events_of(RequestCompleted)}
    assert done == {("", 499, "client_disconnected"), ("echo-0", 200, None)}  # no runner took the abandoned one


def test_a_caller_that_hangs_up_while_the_runner_works_frees_it_at_once(harness: GatewayHarness) -> None:
    url = harness.serve([app_config("slow")])
    pool = harness.pools["slow"]
    with _connect(url) as sock:
        sock.sendall(b"POST /local/slow/slow?s=30 HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}")
        wait_for(lambda: sum(info.in_flight for info in pool.runners()) == 1)
    wait_for(lambda: sum(info.in_flight for info in pool.runners()) == 0)  # long before the runner's 30 s
    wait_for(lambda: harness.events_of(RequestCompleted))
    assert [e.status_code for e in harness.events_of(RequestCompleted)] == [499]
    assert pool.outcomes[-1][1] == "error"  # the caller's doing: the runner stays
    assert pool.replaced == []


# -- stalled and oversized uploads -------------------------------------------------------------------------


def test_stalled_uploads_hold_no_runner_and_do_not_starve_other_callers(harness: GatewayHarness) -> None:
    url = harness.serve([app_config("echo", max_multiplexing=1)], runners_per_app=2)
    pool = harness.pools["echo"]
    stalled = [_connect(url) for _ in range(3)]  # more stalled uploads than runners
    try:
        for sock in stalled:
            sock.sendall(b"POST /local/echo/upload HTTP/1.1\r\nhost: x\r\ncontent-length: 1000\r\n\r\nabc")
        with httpx.Client(timeout=20) as other:
            for _ in range(3):
                assert other.post(f"{url}/local/echo/other", content=b"{}").status_code == 200
        wait_for(lambda: sum(info.in_flight for info in pool.runners()) == 0)  # released just after each answer
        assert len(pool.acquired) == 3  # the three served requests, none of the stalled ones
    finally:
        for sock in stalled:
            sock.close()


def test_a_body_that_stops_arriving_is_408_after_body_timeout(harness: GatewayHarness) -> None:
    url = harness.serve([app_config("echo")], settings=Settings(body_timeout=1.0))
    for head in (
        b"content-length: 100\r\n\r\n" + b"x" * 10,
        b"transfer-encoding: chunked\r\n\r\n3\r\nabc\r\n",
    ):
        with _connect(url) as sock:
            sock.sendall(b"POST /local/echo/upload HTTP/1.1\r\nhost: x\r\n" + head)
            answer = _answer(sock)  # the gateway answers, then closes the connection
        status, _, body = answer.partition(b"\r\n\r\n")
        assert status.startswith(b"HTTP/1.1 408 "), answer
        assert b"body_timeout" in body
    assert _forwarded(harness, "echo-0") == []


def _response(sock: socket.socket) -> tuple[bytes, bytes]:
    """One response: its status line and its body (by Content-Length)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += sock.recv(65536)
    return head.split(b"\r\n")[0], body


def test_a_body_over_max_body_is_413_and_the_caller_can_go_on(harness: GatewayHarness) -> None:
    url = harness.serve([app_config("echo")], settings=Settings(max_body_mb=1))
    with _connect(url) as sock:
        # Declared too large: answered before any of it is read ...
        sock.sendall(b"POST /local/echo/upload HTTP/1.1\r\nhost: x\r\ncontent-length: 2000000\r\n\r\n")
        status, body = _response(sock)
        assert status.startswith(b"HTTP/1.1 413 ")
        assert b"max_body_mb" in body
        assert json.loads(body)["error_type"] == "bad_request"  # as the queue's 413, on both paths
        sock.sendall(b"y" * 2_000_000)  # ... and a caller that sends it anyway is not cut off
        # Chunked: answered once it grows past the limit; the rest is read and dropped.
        sock.sendall(b"POST /local/echo/upload HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n")
        part = b"%x\r\n%s\r\n" % (100_000, b"y" * 100_000)
        sock.sendall(part * 12 + b"0\r\n\r\n")
        assert _response(sock)[0].startswith(b"HTTP/1.1 413 ")
        sock.sendall(b"POST /local/echo/fits HTTP/1.1\r\nhost: x\r\ncontent-length: 1000000\r\n\r\n" + b"z" * 1_000_000)
        status, body = _response(sock)
        assert status.startswith(b"HTTP/1.1 200 ")
    assert len(json.loads(body)["body"]) == 1_000_000
    assert _forwarded(harness, "echo-0") == ["/fits"]


# -- what the caller cannot set ----------------------------------------------------------------------------


def test_headers_that_differ_from_reserved_ones_only_by_underscores_are_dropped(
    harness: GatewayHarness, client: httpx.Client
) -> None:
    url = harness.serve([app_config("echo")])
    seen = client.post(
        f"{url}/local/echo/who",
        content=b"{}",
        headers={
            "x_fal_caller_user_id": "admin",
            "X_Fal_Request_Id": "forged",
            "x-fal_endpoint": "elsewhere",
            "content_length": "999",
            "transfer_encoding": "chunked",
            "proxy_authorization": "Basic eA==",
            "x_custom_thing": "kept",  # underscores alone are fine
        },
    ).json()["headers"]
    assert "x-fal-caller-user-id" not in seen  # an anonymous caller of a public app
    assert {name for name in seen if "_" in name} == {"x_custom_thing"}
    assert seen["x-fal-endpoint"] == "local/echo/who"


def test_a_key_after_any_whitespace_is_a_key_and_never_reaches_the_runner(
    harness: GatewayHarness, client: httpx.Client, keys: KeyStore
) -> None:
    url = harness.serve([app_config("open", auth="public"), app_config("mine", auth="private")])
    _, key = keys.create("test")
    for value in (f"Key\t{key}", f"key  {key}", f"KEY \t {key}", f"Bearer\t{key}"):
        for app in ("open", "mine"):
            resp = client.post(f"{url}/local/{app}/x", content=b"{}", headers={"Authorization": value})
            assert resp.status_code == 200, (value, app)
            seen = resp.json()["headers"]
            assert "authorization" not in seen, (value, app)
            assert seen["x-fal-caller-user-id"] == "local"
    secret = key.split(":")[1]
    for bad in (f"Key\tnobody:{secret}", "Key\tgarbage", "Key", f"Bearer\tnobody:{secret}"):
        resp = client.post(f"{url}/local/open/x", content=b"{}", headers={"Authorization": bad})
        assert resp.status_code == 401, bad  # a fal key that does not check out, even on a public app
    mixed = {"Authorization": "Basic dXNlcjpwYXNz"}
    assert client.get(f"{url}/local/open/x", headers=mixed).json()["headers"]["authorization"] == mixed["Authorization"]
    assert all(secret not in json.dumps(call) for call in harness.probes["open-0"].calls)


def test_key_parsing_follows_rfc_9110() -> None:
    assert parse_authorization("Key\ta:b") == ("a", "b")
    assert parse_authorization(" bearer \t a:b ") == ("a", "b")
    assert parse_authorization("Basic a:b") is None
    assert parse_authorization("Keya:b") is None
    assert [looks_like_key(v) for v in ("Key\tgarbage", "KEY", "Bearer x:y")] == [True, True, True]
    assert [looks_like_key(v) for v in ("Bearer eyJhbGciOi", "Basic a:b")] == [False, False]


@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf", "Infinity", "1e309"])
def test_a_request_timeout_that_is_not_a_finite_number_is_400(
    harness: GatewayHarness, client: httpx.Client, value: str
) -> None:
    url = harness.serve([app_config("echo")])
    resp = client.post(f"{url}/local/echo/", content=b"{}", headers={"X-Fal-Request-Timeout": value})
    assert resp.status_code == 400
    assert resp.json()["error_type"] == "bad_request"
    assert _forwarded(harness, "echo-0") == []


def test_an_encoded_slash_in_the_owner_or_app_segment_is_404(harness: GatewayHarness, client: httpx.Client) -> None:
    url = harness.serve([app_config("echo")])
    for path in ("/local%2fecho/x", "/local%2Fecho/x", "/local/echo%2fsub/x", "/queue%2flocal/echo/x"):
        resp = client.post(url + path, content=b"{}")
        assert resp.status_code == 404, path
    # Other encodings route by their decoded form, and the runner gets the path after them as sent.
    seen = client.post(f"{url}/local/%65cho/a%2Fb?q=1", content=b"{}").json()
    assert (seen["raw_path"], seen["headers"]["x-fal-endpoint"]) == ("/a%2Fb", "local/echo/a/b")
    assert _forwarded(harness, "echo-0") == ["/a/b"]
