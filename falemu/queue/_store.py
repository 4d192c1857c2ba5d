"""The queue's durable store: one SQLite database (WAL) plus a folder of large bodies.

Writes go through one writer thread that commits them in batches: whatever is waiting when it wakes
up shares one transaction, so a burst of submits costs a few commits, not one each. A submit waits
for its commit before it is acknowledged (:meth:`QueueStore.add` returns an awaitable) and wakes the
writer at once; progress and results are written without anyone waiting, at most :data:`LINGER`
seconds later, many in one transaction and one wake-up of the writer. :meth:`QueueStore.flush`
(called on every stop) waits for all of them. ``synchronous = NORMAL`` makes a commit a write to the
WAL file without an fsync: a commit survives falemu being killed (the OS has it), and only a crash of
the machine itself can lose the last commits.

Reads (:meth:`get`, :meth:`open_requests`, :meth:`counts`) use a second connection and never wait
for the writer. Completed requests are kept :data:`RESULT_RETENTION` seconds after they complete, or
after their result was last fetched, whichever is later; expired rows and their files are purged
every minute.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import queue
import shutil
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from falemu.errors import FalemuError
from falemu.queue import _sql as sql
from falemu.queue._body import EMPTY, Body
from falemu.queue._location import StoreLock
from falemu.queue._records import (
    COMPLETED,
    IN_PROGRESS,
    IN_QUEUE,
    StoredRequest,
    StoredResult,
    headers_from_json,
    load_headers,
)
from falemu.queue._sql import RESULT_RETENTION, SCHEMA, SCHEMA_VERSION

PURGE_EVERY = 60.0
BATCH = 1024  # writes committed in one transaction at most
LINGER = 0.02  # seconds writes nobody waits for may wait for company before their commit
DATABASE = "queue.sqlite3"


Notify = Callable[[BaseException | None], None]  # called in its event loop once the write is committed


@dataclass(slots=True)
class _Op:
    """One write: ``fn(conn, *args)``, then ``notify`` once committed (may return a cleanup to run after)."""

    fn: Callable[..., Any]
    args: tuple[Any, ...]
    notify: tuple[asyncio.AbstractEventLoop, Notify] | threading.Event | None = None


@dataclass(frozen=True)
class StoreCounts:
    """Requests in the store by state: ``queued`` and ``in_progress`` by app, ``completed`` in all."""

    queued: dict[str, int]
    in_progress: dict[str, int]
    completed: int


class QueueStore:
    """The durable queue of one project and owner (or a throwaway one, see :meth:`ephemeral`)."""

    def __init__(
        self,
        folder: Path,
        *,
        durable: bool = True,
        lock: StoreLock | None = None,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.folder = folder
        self.durable = durable
        self.bodies = folder / "bodies"
        self.bodies.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._lock = lock
        self._on_error: Callable[[str], None] | None = None
        self._reported: set[str] = set()
        path = folder / DATABASE
        try:
            self._writer = _connect(path)
            self._setup()
            self._reader = _connect(path)
        except sqlite3.Error as exc:
            if lock is not None:
                lock.release()
            raise FalemuError(
                f"cannot open the queue database {path}: {exc}",
                hint="move that folder away to start with an empty queue",
            ) from None
        self._read_lock = threading.Lock()
        self._ops: collections.deque[_Op] = collections.deque()  # appended by anyone, taken by the writer
        self._wake: queue.SimpleQueue[None] = queue.SimpleQueue()  # a token wakes the writer
        self._idle = False  # the writer sleeps until woken: any write wakes it
        self._urgent = 0  # writes someone waits for, appended so far ...
        self._urgent_taken = 0  # ... and taken by the writer
        self._closed = False
        self._now = now
        self._purged = 0.0
        self._purge(now())
        self._remove_orphans()
        self._thread = threading.Thread(target=self._write_loop, name="falemu-queue-store", daemon=True)
        self._thread.start()

    @classmethod
    def open(cls, folder: Path, *, now: Callable[[], float] = time.time) -> QueueStore:
        """The durable store in ``folder``, locked for this process (:class:`UsageError` when taken)."""
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        lock = StoreLock.acquire(folder)
        return cls(folder, durable=True, lock=lock, now=now)

    @classmethod
    def ephemeral(cls) -> QueueStore:
        """A store in a new temporary folder, removed by :meth:`close` (tests, ``falemu check``)."""
        return cls(Path(tempfile.mkdtemp(prefix="falemu-queue-")), durable=False)

    def on_error(self, report: Callable[[str], None]) -> None:
        """Where a failed write is reported (once per kind of failure), from the writer thread."""
        self._on_error = report

    # -- writes ---------------------------------------------------------------------------------------
    def add(self, req: StoredRequest) -> asyncio.Future[None]:
        """Store a new request; the future is done once it is committed (raises if it could not be)."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()

        def notify(exc: BaseException | None) -> None:
            if fut.done():
                return
            if exc is None:
                fut.set_result(None)
            else:
                fut.set_exception(exc)

        self._put(sql.insert, (req,), (loop, notify), urgent=True)
        return fut

    def started(self, request_id: str, attempts: int, runner: str, started_at: float) -> None:
        self._put(sql.started, (request_id, attempts, runner, started_at))

    def requeued(self, request_id: str, attempts: int) -> None:
        """Back in the queue (a retry, or an attempt cut off by a stop)."""
        self._put(sql.requeued, (request_id, attempts))

    def completed(self, req: StoredRequest, on_commit: Callable[[], None] | None = None) -> None:
        """Store ``req``'s result (``req.result``, ``finished_at``, ``logs``); its input body is dropped.

        ``on_commit`` runs in the calling event loop once the result is committed.
        """
        notify: Any = None
        if on_commit is not None:
            callback = on_commit
            notify = (asyncio.get_running_loop(), lambda exc: callback())
        self._put(sql.completed, (req, self._now()), notify)

    def logs(self, request_id: str, logs: list[dict[str, Any]], on_commit: Callable[[], None] | None = None) -> None:
        """Replace a request's log lines (lines a runner wrote just after the request completed)."""
        notify: Any = None
        if on_commit is not None:
            callback = on_commit
            notify = (asyncio.get_running_loop(), lambda exc: callback())
        self._put(sql.logs, (request_id, json.dumps(logs)), notify)

    def fetched(self, request_id: str, now: float | None = None) -> None:
        """The result was fetched by id: keep it at least :data:`RESULT_RETENTION` from now."""
        self._put(sql.fetched, ((now if now is not None else self._now()) + RESULT_RETENTION, request_id))

    def flush(self, timeout: float | None = 30.0) -> bool:
        """Wait until every write made before this call is committed; False on timeout or when closed."""
        if self._closed:
            return False
        done = threading.Event()
        self._put(sql.noop, (), done, urgent=True)
        return done.wait(timeout)

    def _put(self, fn: Callable[..., Any], args: tuple[Any, ...], notify: Any = None, *, urgent: bool = False) -> None:
        """Hand a write to the writer. Only an urgent one (someone waits for its commit) wakes it at
        once; the others are taken within :data:`LINGER` seconds, many per wake-up, so the writer does
        not compete with the gateway's thread for the GIL on every request."""
        if self._closed:
            raise FalemuError("the queue store is closed")
        self._ops.append(_Op(fn, args, notify))
        if urgent:
            self._urgent += 1
            self._wake.put(None)
        elif self._idle:
            self._wake.put(None)

    # -- reads ----------------------------------------------------------------------------------------
    def get(self, request_id: str) -> StoredRequest | None:
        with self._read_lock:
            row = self._reader.execute("SELECT * FROM requests WHERE id = ?", (request_id,)).fetchone()
        return self._row(row) if row is not None else None

    def open_requests(self, apps: Iterable[str] | None = None) -> list[StoredRequest]:
        """Requests not completed (queued, or in progress when falemu last stopped), in queue order."""
        with self._read_lock:
            rows = self._reader.execute(
                "SELECT * FROM requests WHERE status != 'COMPLETED' ORDER BY seq, submitted_at"
            ).fetchall()
        wanted = set(apps) if apps is not None else None
        return [self._row(r) for r in rows if wanted is None or r["app"] in wanted]

    def counts(self) -> StoreCounts:
        queued: dict[str, int] = {}
        running: dict[str, int] = {}
        completed = 0
        with self._read_lock:
            rows = self._reader.execute("SELECT app, status, count(*) FROM requests GROUP BY app, status").fetchall()
        for app, status, n in rows:
            if status == IN_QUEUE:
                queued[app] = n
            elif status == IN_PROGRESS:
                running[app] = n
            elif status == COMPLETED:
                completed += n
        return StoreCounts(queued, running, completed)

    def max_seq(self, modulo: int) -> int:
        """The largest stored ``seq % modulo`` (-1 when empty): new requests queue after these."""
        with self._read_lock:
            row = self._reader.execute("SELECT max(seq % ?) FROM requests", (modulo,)).fetchone()
        return int(row[0]) if row is not None and row[0] is not None else -1

    def _row(self, row: sqlite3.Row) -> StoredRequest:
        meta = json.loads(row["request"])
        result: StoredResult | None = None
        if row["result_status"] is not None:
            result = StoredResult(
                status=row["result_status"],
                headers=load_headers(row["result_headers"]),
                body=self._body(row["result_body"], row["result_file"], row["result_size"]),
                error=row["error"],
                error_type=row["error_type"],
            )
        return StoredRequest(
            id=row["id"],
            app=row["app"],
            seq=row["seq"],
            method=meta["method"],
            target=meta["target"].encode("latin-1"),
            endpoint=meta["endpoint"],
            headers=headers_from_json(meta["headers"]),
            base_url=meta["base_url"],
            submitted_at=row["submitted_at"],
            caller=meta.get("caller"),
            priority=meta.get("priority", "normal"),
            no_retry=bool(meta.get("no_retry", False)),
            runner_hint=meta.get("runner_hint"),
            start_deadline=meta.get("start_deadline"),
            webhook=meta.get("webhook"),
            store_io=bool(meta.get("store_io", True)),
            body=self._body(row["body"], row["body_file"], row["body_size"]),
            status=row["status"],
            attempts=row["attempts"],
            runner=row["runner"],
            started_at=row["started_at"],
            finished_at=row["finished_at"],
            result=result,
            logs=json.loads(row["logs"]) if row["logs"] else [],
            expires_at=row["expires_at"],
        )

    def _body(self, data: bytes | None, name: str | None, size: int | None) -> Body:
        if name:
            return Body(path=self.bodies / name, size=size or 0)
        if data:
            return Body.of(bytes(data))
        return EMPTY

    # -- the writer thread ----------------------------------------------------------------------------
    def _setup(self) -> None:
        conn = self._writer
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise sqlite3.DatabaseError(f"made by a newer falemu (schema {version}, this one knows {SCHEMA_VERSION})")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.executescript(SCHEMA)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _write_loop(self) -> None:
        conn = self._writer
        while True:
            batch = self._gather()
            if not batch:
                self._maybe_purge()
                continue
            stop = False
            after: list[Callable[[], None]] = []
            failed: BaseException | None = None
            try:
                conn.execute("BEGIN")
                for op in batch:
                    if op is _STOP:
                        stop = True
                        continue
                    cleanup = op.fn(conn, *op.args)
                    if cleanup is not None:
                        after.append(cleanup)
                conn.execute("COMMIT")
            except Exception as exc:  # sqlite3.Error mostly (disk full); the writer must live on
                failed = exc
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                self._report(f"queue store write failed: {exc}")
            if failed is None:
                for cleanup in after:
                    with contextlib.suppress(OSError):
                        cleanup()
            self._notify(batch, failed)
            if stop:
                return
            self._maybe_purge()

    def _gather(self) -> list[_Op]:
        """The writes of the next transaction: when nothing waits, sleep until a write comes (or the
        next purge); unless someone waits for a commit, give others :data:`LINGER` seconds to join."""
        ops = self._ops
        if not ops:
            self._idle = True
            if not ops:  # a write appended after this check sees _idle and wakes this thread
                self._sleep(PURGE_EVERY)
            self._idle = False
        self._drain_wakes()
        if ops and self._urgent == self._urgent_taken:
            self._sleep(LINGER)  # an urgent write cuts this short
            self._drain_wakes()
        batch: list[_Op] = []
        urgent = self._urgent  # those appended from here on wake the next round at once
        while ops and len(batch) < BATCH:
            batch.append(ops.popleft())
        self._urgent_taken = urgent
        return batch

    def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(queue.Empty):
            self._wake.get(timeout=seconds)

    def _drain_wakes(self) -> None:
        with contextlib.suppress(queue.Empty):
            while True:
                self._wake.get_nowait()

    def _notify(self, batch: list[_Op], failed: BaseException | None) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[Notify]] = {}
        for op in batch:
            notify = op.notify
            if notify is None:
                continue
            if isinstance(notify, threading.Event):
                notify.set()
                continue
            loop, fn = notify
            by_loop.setdefault(loop, []).append(fn)
        for loop, fns in by_loop.items():
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits any more
                loop.call_soon_threadsafe(_run_all, fns, failed)

    def _maybe_purge(self) -> None:
        now = self._now()
        if now - self._purged >= PURGE_EVERY:
            try:
                self._purge(now)
            except sqlite3.Error as exc:
                self._report(f"queue store purge failed: {exc}")

    def _purge(self, now: float) -> None:
        """Drop completed requests whose retention ended, with their files."""
        self._purged = now
        conn = self._writer
        rows = conn.execute(
            "SELECT body_file, result_file FROM requests WHERE expires_at IS NOT NULL AND expires_at < ?", (now,)
        ).fetchall()
        if not rows:
            return
        conn.execute("DELETE FROM requests WHERE expires_at IS NOT NULL AND expires_at < ?", (now,))
        for names in rows:
            for name in names:
                if name:
                    with contextlib.suppress(OSError):
                        (self.bodies / name).unlink()

    def _remove_orphans(self) -> None:
        """Files no row refers to: bodies of submits cut short, results of attempts cut short."""
        rows = self._writer.execute(
            "SELECT body_file, result_file FROM requests WHERE body_file IS NOT NULL OR result_file IS NOT NULL"
        ).fetchall()
        known = {name for names in rows for name in names if name}
        with contextlib.suppress(OSError):
            for entry in os.scandir(self.bodies):
                if entry.name not in known:
                    with contextlib.suppress(OSError):
                        os.unlink(entry.path)

    def _report(self, message: str) -> None:
        kind = message.split(":", 1)[0]
        if kind in self._reported or self._on_error is None:
            return
        self._reported.add(kind)
        with contextlib.suppress(Exception):
            self._on_error(message)

    # -- lifecycle ------------------------------------------------------------------------------------
    def close(self) -> None:
        """Commit what is pending, stop the writer, release the lock (and remove an ephemeral store)."""
        if self._closed:
            return
        self._closed = True
        self._ops.append(_STOP)
        self._urgent += 1
        self._wake.put(None)
        self._thread.join(60)
        with self._read_lock:
            self._reader.close()
        if not self._thread.is_alive():
            self._writer.close()
        if self._lock is not None:
            self._lock.release()
        if not self.durable:
            shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> QueueStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10.0)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA synchronous = NORMAL")
    return conn


def _run_all(fns: list[Notify], failed: BaseException | None) -> None:
    for fn in fns:
        fn(failed)


_STOP = _Op(sql.noop, (), threading.Event())  # ends the writer thread after the writes before it
