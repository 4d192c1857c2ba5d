"""The queue's durable store: requests, their progress and results in SQLite, independent of HTTP.

The gateway's :class:`~falemu.gateway.queue.QueueManager` runs the queue (waiting, retries, logs,
webhooks); this package keeps what must survive a stop of ``falemu up``: every request submitted and
not completed, and every result for :data:`RESULT_RETENTION` seconds. Bodies over
:data:`SPILL_THRESHOLD` bytes live in files next to the database, so neither the queue nor its
results hold large bodies in memory. See :mod:`falemu.queue._location` for where a project's store
lives and :mod:`falemu.queue._store` for what a crash can lose.
"""

from __future__ import annotations

from falemu.queue._body import EMPTY, SPILL_THRESHOLD, Body, BodyTooLarge, Spool
from falemu.queue._location import StoreLock, check_outside, queue_dir
from falemu.queue._records import COMPLETED, IN_PROGRESS, IN_QUEUE, StoredRequest, StoredResult
from falemu.queue._sql import RESULT_RETENTION
from falemu.queue._store import QueueStore, StoreCounts

__all__ = [
    "COMPLETED",
    "EMPTY",
    "IN_PROGRESS",
    "IN_QUEUE",
    "RESULT_RETENTION",
    "SPILL_THRESHOLD",
    "Body",
    "BodyTooLarge",
    "QueueStore",
    "Spool",
    "StoreCounts",
    "StoreLock",
    "StoredRequest",
    "StoredResult",
    "check_outside",
    "queue_dir",
]
