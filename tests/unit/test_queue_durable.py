"""The queue across a stop of its gateway, large bodies and the body limit (probe runners, no Docker).

A gateway serves a durable :class:`QueueStore` in ``tmp_path``; "restart" is a second gateway on the
same store. Runners are the probe (:mod:`falemu.gateway.probe`), which records every call it gets.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from gateway_support import app_config, wait_for

from falemu.config.settings import Settings
from falemu.events import QueueResumed, QueueStopped
from falemu.gateway.harness import GatewayHarness
from falemu.gateway.keys import KeyStore
from falemu.queue import Body, QueueStore, StoredRequest

Q = "/queue/local"


def moved(url: str, old: str, new: str) -> str:
    """A URL returned by the first gateway, pointed at the second (same paths, another port)."""
    assert url.startswith(old)
    return new + url[len(old) :]


def completed(client: httpx.Client, status_url: str) -> dict[str, Any]:
    holder: dict[str, Any] = {}

    def done() -> bool:
        resp = client.get(status_url)
        holder["body"] = resp.json()
        return bool(resp.status_code == 200 and resp.json()["status"] == "COMPLETED")

    wait_for(done, timeout=30)
    return dict(holder["body"])


def calls(harness: GatewayHarness, path: str) -> list[str]:
    """Request ids of the calls to ``path`` that the runners of this gateway saw."""
    return [c["headers"]["x-fal-request-id"] for p in harness.probes.values() for c in p.calls if c["path"] == path]


def test_a_stop_keeps_the_queue_and_results_and_the_next_start_runs_what_was_left(
    keys: KeyStore, client: httpx.Client, tmp_path: Path
) -> None:
    config = app_config("echo", termination_grace_period_seconds=2)
    first = GatewayHarness(keys)
    store = QueueStore.open(tmp_path / "queue")
    try:
        url = first.serve([config], runners_per_app=3, queue_store=store)
        done = client.post(f"{url}{Q}/echo/before", json={"n": 0}).json()
        assert completed(client, done["status_url"])["status"] == "COMPLETED"
        quick = client.post(f"{url}{Q}/echo/slow?s=0.5").json()  # finishes within the grace period
        cut = client.post(f"{url}{Q}/echo/slow?s=4").json()  # cut off: queued again
        no_retry = client.post(f"{url}{Q}/echo/slow?s=4", headers={"x-fal-no-retry": "1"}).json()
        wait_for(lambda: len(calls(first, "/slow")) == 3)
        waiting = [client.post(f"{url}{Q}/echo/after", json={"n": i}).json() for i in (1, 2)]
        assert all(w["queue_position"] == i for i, w in enumerate(waiting))
    finally:
        first.close()
        store.close()
    (stopped,) = first.events_of(QueueStopped)
    assert (stopped.queued, stopped.requeued, stopped.failed, stopped.finished) == (3, 1, 1, 1)
    assert stopped.results == 3  # before, quick, and the cut-off request that may not run again
    assert calls(first, "/after") == []

    second = GatewayHarness(keys)
    store = QueueStore.open(tmp_path / "queue")
    try:
        url2 = second.serve([config], runners_per_app=1, queue_store=store)
        (resumed,) = second.events_of(QueueResumed)
        assert (resumed.queued, resumed.failed) == (3, 0)
        for data in [cut, *waiting]:
            final = completed(client, moved(data["status_url"], url, url2))
            assert "error" not in final, final
        for i, data in enumerate(waiting, start=1):
            result = client.get(moved(data["response_url"], url, url2))
            assert result.status_code == 200
            assert json.loads(result.json()["body"]) == {"n": i}
        assert sorted(calls(second, "/after")) == sorted(w["request_id"] for w in waiting)  # each ran once
        assert calls(second, "/slow") == [cut["request_id"]]

        before = client.get(moved(done["response_url"], url, url2))  # completed before the stop
        assert before.status_code == 200
        assert json.loads(before.json()["body"]) == {"n": 0}
        assert client.get(moved(quick["status_url"], url, url2)).json()["status"] == "COMPLETED"
        failed = completed(client, moved(no_retry["status_url"], url, url2))
        assert failed["error_type"] == "runner_disconnected"
        assert client.get(moved(no_retry["response_url"], url, url2)).status_code == 503
        again = client.put(moved(done["cancel_url"], url, url2))
        assert (again.status_code, again.json()) == (400, {"status": "ALREADY_COMPLETED"})
    finally:
        second.close()
        store.close()


def test_large_bodies_wait_in_files_and_reach_the_runner_and_the_caller_intact(
    keys: KeyStore, client: httpx.Client, tmp_path: Path
) -> None:
    harness = GatewayHarness(keys)
    store = QueueStore.open(tmp_path / "queue")
    try:
        url = harness.serve([app_config("echo")], queue_store=store)
        blocker = client.post(f"{url}{Q}/echo/slow?s=30").json()
        wait_for(lambda: len(calls(harness, "/slow")) == 1)
        text = "".join(chr(ord("a") + i % 26) for i in range(3 * 1024 * 1024))
        big = client.post(f"{url}{Q}/echo/big", content=text.encode()).json()
        spilled = store.bodies / f"{big['request_id']}.in"
        assert spilled.stat().st_size == len(text)  # waiting in a file, not in memory
        client.put(blocker["cancel_url"])
        completed(client, big["status_url"])
        result = client.get(big["response_url"])
        assert result.status_code == 200
        assert result.json()["body"] == text
        assert int(result.headers["content-length"]) == len(result.content)
        assert (store.bodies / f"{big['request_id']}.out").exists()  # the large result is a file too
        wait_for(lambda: not spilled.exists())  # the input goes once the completion is committed
    finally:
        harness.close()
        store.close()


@pytest.fixture
def limited(harness: GatewayHarness) -> str:
    return harness.serve([app_config("echo")], settings=Settings(max_body_mb=1, body_timeout=1.0))


def test_a_submit_over_the_body_limit_is_413_before_its_body_is_read(limited: str) -> None:
    host, port = limited.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            f"POST {Q}/echo/big HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
            f"Content-Length: {2 * 1024 * 1024}\r\nExpect: 100-continue\r\n\r\n".encode()
        )
        answer = b""
        while not answer.endswith(b"}") and not answer.endswith(b"\r\n0\r\n\r\n"):
            answer += sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 413 "), answer  # no "100 Continue": the body was never asked for
    payload = answer.split(b"\r\n\r\n", 1)[1]
    body = json.loads(payload[payload.index(b"{") : payload.rindex(b"}") + 1])
    assert body == {"detail": "Request body is larger than 1 MB (falemu's max_body_mb setting)",
                    "error_type": "bad_request"}  # fmt: skip


def test_a_submit_whose_body_stops_arriving_is_408(limited: str) -> None:
    host, port = limited.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(f"POST {Q}/echo/slow HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789".encode())
        answer = sock.recv(65536)  # body_timeout is 1 s here
    assert answer.startswith(b"HTTP/1.1 408 "), answer


def test_a_chunked_submit_is_413_once_it_passes_the_limit(limited: str, client: httpx.Client) -> None:
    sent = 0

    def chunks() -> Iterator[bytes]:
        nonlocal sent
        for _ in range(64):
            sent += 64 * 1024
            yield b"x" * (64 * 1024)

    resp = client.post(f"{limited}{Q}/echo/big", content=chunks())
    assert resp.status_code == 413
    assert resp.json()["error_type"] == "bad_request"
    assert resp.headers["x-fal-error-type"] == "bad_request"
    at_limit = client.post(f"{limited}{Q}/echo/big", content=b"x" * 1024 * 1024)
    assert at_limit.status_code == 200  # the limit itself is allowed


def test_requests_in_progress_when_falemu_was_killed_run_again_unless_they_may_not(
    keys: KeyStore, client: httpx.Client, tmp_path: Path
) -> None:
    def stored(rid: str, seq: int, no_retry: bool) -> StoredRequest:
        return StoredRequest(
            id=rid, app="echo", seq=seq, method="POST", target=b"/again", endpoint="local/echo/again",
            headers=[(b"content-type", b"application/json")], base_url=f"http://old{Q}/echo/requests/{rid}",
            submitted_at=time.time(), no_retry=no_retry, body=Body.of(b'{"again": true}'),
        )  # fmt: skip

    async def killed_while_running(store: QueueStore) -> None:  # what a SIGKILL leaves in the store
        await asyncio.gather(store.add(stored("retried", 1, False)), store.add(stored("final", 2, True)))
        store.started("retried", 1, "gone-runner", time.time())
        store.started("final", 1, "gone-runner", time.time())

    with QueueStore.open(tmp_path / "queue") as store:
        asyncio.run(killed_while_running(store))

    harness = GatewayHarness(keys)
    store = QueueStore.open(tmp_path / "queue")
    try:
        url = harness.serve([app_config("echo")], queue_store=store)
        (resumed,) = harness.events_of(QueueResumed)
        assert (resumed.queued, resumed.failed) == (1, 1)
        again = completed(client, f"{url}{Q}/echo/requests/retried/status")
        assert "error" not in again
        assert json.loads(client.get(f"{url}{Q}/echo/requests/retried").json()["body"]) == {"again": True}
        final = completed(client, f"{url}{Q}/echo/requests/final/status")
        assert final["error_type"] == "runner_disconnected"  # x-fal-no-retry: it may have run already
        assert calls(harness, "/again") == ["retried"]
    finally:
        harness.close()
        store.close()
