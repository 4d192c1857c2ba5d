"""Runners whose answers bend HTTP/1.1's framing rules, through the gateway's fast path and its ASGI path.

The runner here is a raw TCP server that writes canned bytes per path, as hand-written or old servers do
(``http.server``'s HTTP/1.0 answers, a 204 with a length, a length and ``chunked`` together). Both
sync paths must give the caller a well-framed answer, or fal's 502 ``runner_incomplete_response``, and
keep working for the next request on the same caller connection.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import httpx
import pytest
from gateway_support import app_config

from falemu.gateway.harness import GatewayHarness
from falemu.runtime.base import Runner

OK_JSON = b'{"ok":true}'

ANSWERS: dict[str, bytes] = {
    "/ok": b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n" + OK_JSON,
    "/204-length": b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n",
    "/304-length": b'HTTP/1.1 304 Not Modified\r\nETag: "e"\r\nContent-Length: 12345\r\n\r\n',
    "/length-and-chunked": b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"2\r\nok\r\n0\r\n\r\n",
    "/same-lengths": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok",
    "/conflicting-lengths": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 10\r\n\r\nokEXTRAXXXX",
    "/negative-length": b"HTTP/1.1 200 OK\r\nContent-Length: -2\r\n\r\nok",
    "/status-999": b"HTTP/1.1 999 Request denied\r\nContent-Length: 2\r\n\r\nok",
    "/bare-lf": b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok",
}


class RawRunner:
    """Answers each request with ``ANSWERS[path]``; an HTTP/1.0 answer (``/http10``) closes the connection
    only ``linger`` seconds after it, as ``http.server`` does when its handler still works after writing."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._threads: list[threading.Thread] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        buf = b""
        with conn:
            while True:
                while b"\r\n\r\n" not in buf:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                head, _, buf = buf.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                while len(buf) < length:
                    buf += conn.recv(65536)
                buf = buf[length:]
                path = head.split(b" ")[1].decode().split("?")[0]
                if path == "/http10":
                    conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 11\r\n\r\n" + OK_JSON)
                    threading.Event().wait(0.3)
                    return
                conn.sendall(ANSWERS[path])

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def raw_url(harness: GatewayHarness) -> Iterator[str]:
    runner = RawRunner()
    url = harness.serve(
        [app_config("raw")], runners={"raw": [Runner(id="raw-0", app="raw", host="127.0.0.1", port=runner.port)]}
    )
    yield f"{url}/local/raw"
    runner.close()


def _next_is_fine(client: httpx.Client, url: str) -> None:
    """The caller's kept-alive connection still carries a well-framed answer after the odd one."""
    resp = client.get(f"{url}/ok")
    assert (resp.status_code, resp.content) == (200, OK_JSON)


def test_bodyless_statuses_lose_a_length_the_runner_should_not_have_sent(raw_url: str, client: httpx.Client) -> None:
    for path, status in (("/204-length", 204), ("/304-length", 304)):
        resp = client.get(raw_url + path)
        assert resp.status_code == status
        assert "content-length" not in resp.headers
        assert resp.content == b""
        assert resp.headers["x-fal-request-id"]
        _next_is_fine(client, raw_url)
    assert client.get(raw_url + "/304-length").headers["etag"] == '"e"'


def test_a_length_beside_chunked_is_dropped_and_equal_lengths_become_one(raw_url: str, client: httpx.Client) -> None:
    resp = client.get(raw_url + "/length-and-chunked")
    assert (resp.status_code, resp.content) == (200, b"ok")
    assert "content-length" not in resp.headers
    _next_is_fine(client, raw_url)
    resp = client.get(raw_url + "/same-lengths")
    assert (resp.status_code, resp.content) == (200, b"ok")
    assert resp.headers.get_list("content-length") == ["2"]
    _next_is_fine(client, raw_url)


@pytest.mark.parametrize("path", ["/conflicting-lengths", "/negative-length", "/status-999"])
def test_a_length_or_status_no_client_can_frame_is_502(raw_url: str, client: httpx.Client, path: str) -> None:
    resp = client.get(raw_url + path)
    assert resp.status_code == 502
    assert resp.json()["error_type"] == "runner_incomplete_response"
    assert resp.headers["x-fal-error-type"] == "runner_incomplete_response"
    _next_is_fine(client, raw_url)


def test_a_head_with_bare_lf_line_ends_is_read(raw_url: str, client: httpx.Client) -> None:
    resp = client.get(raw_url + "/bare-lf")
    assert (resp.status_code, resp.content) == (200, b"ok")
    _next_is_fine(client, raw_url)


def test_an_http10_answer_closes_its_runner_connection(raw_url: str, client: httpx.Client) -> None:
    # POST is not sent twice: on a kept-alive connection the runner was about to close, it would be 503
    # runner_disconnected. An HTTP/1.0 answer without keep-alive ends its connection, so none is reused.
    for _ in range(6):
        resp = client.post(raw_url + "/http10", content=b"{}")
        assert (resp.status_code, resp.content) == (200, OK_JSON), resp.text
