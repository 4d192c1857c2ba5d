"""The queue store's SQL: its schema and one function per write, each run in the writer's transaction.

A write function takes the writer's connection and its arguments; it may return a cleanup (removing
a file no row refers to any more) that runs only once the transaction is committed.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable

from falemu.queue._records import StoredRequest, dump_headers, headers_to_json

RESULT_RETENTION = 3600.0  # fal keeps a result for 1 h after its request completes
SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    id TEXT PRIMARY KEY,
    app TEXT NOT NULL,
    seq INTEGER NOT NULL,
    status TEXT NOT NULL,
    submitted_at REAL NOT NULL,
    request TEXT NOT NULL,
    body BLOB,
    body_file TEXT,
    body_size INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    runner TEXT,
    started_at REAL,
    finished_at REAL,
    result_status INTEGER,
    result_headers TEXT,
    result_body BLOB,
    result_file TEXT,
    result_size INTEGER,
    error TEXT,
    error_type TEXT,
    logs TEXT,
    expires_at REAL
);
CREATE INDEX IF NOT EXISTS requests_open ON requests (app, seq) WHERE status != 'COMPLETED';
CREATE INDEX IF NOT EXISTS requests_expiry ON requests (expires_at) WHERE expires_at IS NOT NULL;
"""


def noop(conn: sqlite3.Connection) -> None:
    return None


def insert(conn: sqlite3.Connection, req: StoredRequest) -> None:
    meta = {
        "method": req.method,
        "target": req.target.decode("latin-1"),
        "endpoint": req.endpoint,
        "headers": headers_to_json(req.headers),
        "base_url": req.base_url,
        "caller": req.caller,
        "priority": req.priority,
        "no_retry": req.no_retry,
        "runner_hint": req.runner_hint,
        "start_deadline": req.start_deadline,
        "webhook": req.webhook,
        "store_io": req.store_io,
    }
    body = req.body
    conn.execute(
        "INSERT INTO requests (id, app, seq, status, submitted_at, request, body, body_file, body_size, attempts)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            req.id,
            req.app,
            req.seq,
            req.status,
            req.submitted_at,
            json.dumps(meta),
            None if body.in_file else body.data,
            body.path.name if body.path is not None else None,
            body.size,
            req.attempts,
        ),
    )


def started(conn: sqlite3.Connection, request_id: str, attempts: int, runner: str, started_at: float) -> None:
    conn.execute(
        "UPDATE requests SET status = 'IN_PROGRESS', attempts = ?, runner = ?, started_at = ? WHERE id = ?",
        (attempts, runner, started_at, request_id),
    )


def requeued(conn: sqlite3.Connection, request_id: str, attempts: int) -> None:
    conn.execute(
        "UPDATE requests SET status = 'IN_QUEUE', attempts = ? WHERE id = ? AND status != 'COMPLETED'",
        (attempts, request_id),
    )


def completed(conn: sqlite3.Connection, req: StoredRequest, now: float) -> Callable[[], None] | None:
    result = req.result
    assert result is not None
    finished = req.finished_at if req.finished_at is not None else now
    body = result.body
    conn.execute(
        "UPDATE requests SET status = 'COMPLETED', attempts = ?, runner = ?, started_at = ?, finished_at = ?,"
        " result_status = ?, result_headers = ?, result_body = ?, result_file = ?, result_size = ?,"
        " error = ?, error_type = ?, logs = ?, expires_at = ?, body = NULL, body_file = NULL, body_size = 0"
        " WHERE id = ?",
        (
            req.attempts,
            req.runner,
            req.started_at,
            finished,
            result.status,
            dump_headers(result.headers),
            None if body.in_file else body.data,
            body.path.name if body.path is not None else None,
            body.size,
            result.error,
            result.error_type,
            json.dumps(req.logs) if req.logs else None,
            finished + RESULT_RETENTION,
            req.id,
        ),
    )
    return req.body.remove if req.body.in_file else None


def logs(conn: sqlite3.Connection, request_id: str, logs: str) -> None:
    conn.execute("UPDATE requests SET logs = ? WHERE id = ?", (logs, request_id))


def fetched(conn: sqlite3.Connection, until: float, request_id: str) -> None:
    conn.execute(
        "UPDATE requests SET expires_at = max(expires_at, ?) WHERE id = ? AND status = 'COMPLETED'",
        (until, request_id),
    )
