"""The queue's store on its own: what survives a reopen, a kill, retention, the lock, body spooling."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from falemu.errors import ConfigError, UsageError
from falemu.queue import (
    COMPLETED,
    IN_PROGRESS,
    IN_QUEUE,
    RESULT_RETENTION,
    Body,
    BodyTooLarge,
    QueueStore,
    Spool,
    StoredRequest,
    StoredResult,
    check_outside,
    queue_dir,
)


def request(rid: str, seq: int, body: Body | None = None, app: str = "echo") -> StoredRequest:
    return StoredRequest(
        id=rid,
        app=app,
        seq=seq,
        method="POST",
        target=b"/run?x=%20y",
        endpoint=f"local/{app}/run",
        headers=[(b"content-type", b"application/json"), (b"x-custom", b"\xe9t\xe9")],
        base_url=f"http://127.0.0.1:1/queue/local/{app}/requests/{rid}",
        submitted_at=1000.0 + seq,
        caller="local",
        webhook="http://127.0.0.1:9/hook",
        start_deadline=5000.0,
        body=body or Body.of(b'{"n": %d}' % seq),
    )


def completed(req: StoredRequest, result: Body, finished: float) -> StoredRequest:
    req.status = COMPLETED
    req.attempts = 1
    req.runner = "r1"
    req.started_at = finished - 0.5
    req.finished_at = finished
    req.logs = [{"message": "hello"}]
    req.result = StoredResult(status=200, headers=[(b"content-type", b"application/json")], body=result)
    return req


def test_requests_and_results_survive_a_reopen(tmp_path: Path) -> None:
    store = QueueStore.open(tmp_path / "store", now=lambda: 1030.0)
    big_in = Spool(store.bodies, "b.in", threshold=16)
    big_in.write(b"x" * 1000)
    big_out = Spool(store.bodies, "a.out", threshold=16)
    big_out.write(b"y" * 5000)

    async def fill(store: QueueStore) -> None:
        await asyncio.gather(store.add(request("a", 1)), store.add(request("b", 2, big_in.finish())))
        await store.add(request("c", 3))
        store.started("b", 1, "r2", 1010.0)
        store.completed(completed(request("a", 1), big_out.finish(), finished=1020.0))

    asyncio.run(fill(store))
    store.close()

    again = QueueStore.open(tmp_path / "store", now=lambda: 1040.0)
    try:
        pending = again.open_requests()
        assert [(r.id, r.status, r.attempts) for r in pending] == [("b", IN_PROGRESS, 1), ("c", IN_QUEUE, 0)]
        b = pending[0]
        assert b.body.in_file
        assert b.body.read() == b"x" * 1000
        assert b.headers == [(b"content-type", b"application/json"), (b"x-custom", b"\xe9t\xe9")]
        assert (b.target, b.webhook, b.start_deadline, b.runner) == (
            b"/run?x=%20y",
            "http://127.0.0.1:9/hook",
            5000.0,
            "r2",
        )
        a = again.get("a")
        assert a is not None
        assert a.status == COMPLETED
        assert a.result is not None
        assert a.result.body.read() == b"y" * 5000
        assert a.logs == [{"message": "hello"}]
        assert a.expires_at == 1020.0 + RESULT_RETENTION
        assert a.body.size == 0  # the input of a completed request is not kept
        assert again.open_requests(["other"]) == []
        counts = again.counts()
        assert (counts.queued, counts.in_progress, counts.completed) == ({"echo": 1}, {"echo": 1}, 1)
        assert again.max_seq(1 << 48) == 3
    finally:
        again.close()


def test_results_expire_an_hour_after_completion_or_after_the_last_fetch(tmp_path: Path) -> None:
    clock = {"now": 1000.0}
    store = QueueStore.open(tmp_path / "s", now=lambda: clock["now"])
    spool = Spool(store.bodies, "kept.out", threshold=1)
    spool.write(b"big result")
    result_file = spool.finish()

    async def fill(store: QueueStore) -> None:
        await asyncio.gather(store.add(request("kept", 1)), store.add(request("dropped", 2)))
        store.completed(completed(request("kept", 1), result_file, finished=1000.0))
        store.completed(completed(request("dropped", 2), Body.of(b"{}"), finished=1000.0))
        store.fetched("kept", now=3000.0)  # fetched by id: kept an hour from then

    asyncio.run(fill(store))
    store.close()

    clock["now"] = 1000.0 + RESULT_RETENTION + 1
    store = QueueStore.open(tmp_path / "s", now=lambda: clock["now"])
    assert store.get("dropped") is None
    assert store.get("kept") is not None
    store.close()

    clock["now"] = 3000.0 + RESULT_RETENTION + 1
    store = QueueStore.open(tmp_path / "s", now=lambda: clock["now"])
    assert store.get("kept") is None
    assert not result_file.path or not result_file.path.exists()
    store.close()


def test_an_acknowledged_submit_is_committed_for_any_reader(tmp_path: Path) -> None:
    async def main(store: QueueStore) -> None:
        await asyncio.gather(*(store.add(request(f"r{i}", i)) for i in range(300)))
        other = sqlite3.connect(tmp_path / "q" / "queue.sqlite3")  # another process would see the same
        try:
            assert other.execute("SELECT count(*) FROM requests").fetchone()[0] == 300
        finally:
            other.close()

    with QueueStore.open(tmp_path / "q") as store:
        asyncio.run(main(store))


def test_a_killed_process_loses_no_acknowledged_submit_and_leaves_no_lock(tmp_path: Path) -> None:
    folder = tmp_path / "killed"
    script = textwrap.dedent(
        f"""
        import asyncio, os, signal, sys
        sys.path[:0] = {sys.path!r}
        from pathlib import Path
        from falemu.queue import QueueStore, StoredRequest, Body

        async def main():
            store = QueueStore.open(Path({str(folder)!r}))
            for i in range(200):
                await store.add(StoredRequest(id=f"r{{i}}", app="echo", seq=i, method="POST", target=b"/",
                    endpoint="local/echo/", headers=[], base_url="", submitted_at=0.0, body=Body.of(b"x")))
            print("acknowledged", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)

        asyncio.run(main())
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == -9, proc.stderr
    assert proc.stdout.strip() == "acknowledged"
    with QueueStore.open(folder) as store:  # the lock died with its process
        assert len(store.open_requests()) == 200


def test_one_store_one_process(tmp_path: Path) -> None:
    first = QueueStore.open(tmp_path / "q")
    try:
        with pytest.raises(UsageError) as info:
            QueueStore.open(tmp_path / "q")
        assert f"in use by another falemu up (pid {os.getpid()})" in info.value.message
        assert "--owner" in (info.value.hint or "")
    finally:
        first.close()
    QueueStore.open(tmp_path / "q").close()  # free again once closed


def test_files_no_request_refers_to_are_removed_at_open(tmp_path: Path) -> None:
    with QueueStore.open(tmp_path / "q"):
        pass
    stray = tmp_path / "q" / "bodies" / "gone.in"
    stray.write_bytes(b"a submit cut short")
    with QueueStore.open(tmp_path / "q"):
        assert not stray.exists()


def test_spool_keeps_small_bodies_in_memory_and_spills_large_ones(tmp_path: Path) -> None:
    small = Spool(tmp_path, "small", threshold=10)
    small.write(b"12345")
    body = small.finish()
    assert (body.in_file, body.data, len(body)) == (False, b"12345", 5)
    assert not (tmp_path / "small").exists()

    large = Spool(tmp_path, "large", threshold=10)
    for _ in range(4):
        large.write(b"123456")
    body = large.finish()
    assert body.in_file
    assert body.read() == b"123456" * 4
    assert len(body) == 24

    async def parts() -> list[bytes]:
        return [chunk async for chunk in body.chunks(chunk=10)]

    assert asyncio.run(parts()) == [b"1234561234", b"5612345612", b"3456"]

    limited = Spool(tmp_path, "limited", threshold=10, limit=20)
    limited.write(b"x" * 15)
    with pytest.raises(BodyTooLarge):
        limited.write(b"x" * 6)
    assert not (tmp_path / "limited").exists()


def test_the_store_is_keyed_by_project_and_owner_and_kept_out_of_the_data_folder(
    tmp_path: Path, isolated_home: Path
) -> None:
    a = queue_dir(tmp_path / "proj", "local")
    assert a == queue_dir(tmp_path / "proj", "local")
    assert a != queue_dir(tmp_path / "proj", "team")
    assert a != queue_dir(tmp_path / "other", "local")
    assert a.is_relative_to(isolated_home / "cache" / "falemu" / "queue")
    assert a.name.startswith("proj-local-")
    check_outside(a, isolated_home / "cache" / "falemu" / "data")  # the default data folder: fine
    with pytest.raises(ConfigError) as info:
        check_outside(a, isolated_home / "cache")
    assert "mounted at /data" in info.value.message
