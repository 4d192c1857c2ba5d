"""The request history and runner records behind the dashboard, fed by the event bus and the gateway.

:class:`History` subscribes to the :class:`~falemu.events.EventBus` (requests queued, started and
completed; runner states, readiness, failures and log lines) and is the gateway's
:class:`~falemu.events.BodyRecorder` for inputs and outputs. Everything is bounded:

- the last ``capacity`` requests (default 50,000) with their timings, status, runner and error type;
- their bodies, each capped at ``body_cap`` bytes (64 KiB) and all together at ``body_budget`` bytes
  (64 MiB): past the budget the oldest requests lose their bodies first and keep everything else;
- the last ``runner_capacity`` runners, each with its states over time, its start-up timeline and its
  last ``log_lines`` log lines (a request's logs are its runner's lines while it ran).

Recording is cheap by design. The gateway's calls (events and bodies) only append to a journal: a
body is capped first and kept by reference, never copied, parsed or decoded (that happens when a
page shows it); no lock is taken. Every ``JOURNAL_BATCH`` entries, or when anything reads the
history, the journal is applied to the records in one go. Past the body budget a walk from where the
last one stopped takes the oldest bodies (down to 7/8 of the budget). Per-app figures that pages show
without scanning (the last hour's counts, the latency histogram) are counted as requests end.
``X-Fal-Store-IO: 0`` keeps a request's bodies out, as on fal. Nothing here holds a key or a secret:
the gateway consumes fal keys before the headers reach the recorder, and only content types are kept
of the headers.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from falemu.dashboard.counters import LATENCY_BUCKETS, Counters
from falemu.dashboard.records import LOG_LINES, AppInfo, Body, RequestRecord, RunnerRecord
from falemu.events import (
    Event,
    FaultApplied,
    FaultEnded,
    FaultStarted,
    ReloadStarted,
    RequestCompleted,
    RequestQueued,
    RequestStarted,
    RolloutFailed,
    RolloutFinished,
    RolloutStarted,
    RunnerFailed,
    RunnerLog,
    RunnerReady,
    RunnerStateChanged,
    RunnerStopped,
)

__all__ = [  # the records and counters are their own modules; they are taken from here too
    "LATENCY_BUCKETS",
    "AppInfo",
    "Body",
    "Counters",
    "History",
    "RequestRecord",
    "RunnerRecord",
]

Headers = list[tuple[bytes, bytes]]

CAPACITY = 50_000
BODY_CAP = 64 * 1024
BODY_BUDGET = 64 * 1024 * 1024
RUNNER_CAPACITY = 500
JOURNAL_BATCH = 256  # journal entries applied at once (bodies in it are capped: a few MiB at most)
ACTIVITY = 1_000  # fault and rollout events kept (falemu chaos, falemu up --watch)
LOG_GRACE = 1.0  # a runner's lines this long after a request ended still belong to it (log readers lag)


_CONTENT_TYPES: dict[bytes, str] = {}  # header value -> str: the few an app answers with, decoded once


def _content_type(headers: Headers) -> str:
    for name, value in headers:
        if name == b"content-type":
            text = _CONTENT_TYPES.get(value)
            if text is None:
                text = value.decode("latin-1")
                if len(_CONTENT_TYPES) < 256:
                    _CONTENT_TYPES[value] = text
            return text
    return ""


_INPUT, _OUTPUT, _NO_STORE = "input", "output", "no-store"  # journal entries of bodies


class History:
    """Requests and runners of one emulator, for the dashboard, ``falemu report`` and ``/metrics``.

    Call it with events (subscribe it to the bus); hand it to the gateway as its body recorder.
    """

    def __init__(
        self,
        apps: Mapping[str, AppInfo] | None = None,
        *,
        capacity: int = CAPACITY,
        body_cap: int = BODY_CAP,
        body_budget: int = BODY_BUDGET,
        runner_capacity: int = RUNNER_CAPACITY,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.apps: dict[str, AppInfo] = dict(apps or {})
        self.capacity = capacity
        self.body_cap = body_cap
        self.body_budget = body_budget
        self.runner_capacity = runner_capacity
        self.clock = clock
        self.started_at = clock()
        self._counters = Counters()
        self._version = 0  # bumped on every change a reader may want to see
        # insertion-ordered, oldest first; _order has the same ids for eviction (no per-entry node)
        self._requests: dict[str, RequestRecord] = {}
        self._order: collections.deque[str] = collections.deque()
        self._runners: collections.OrderedDict[str, RunnerRecord] = collections.OrderedDict()
        self._pending: dict[str, tuple[Any, ...]] = {}  # bodies that came before their request's event
        self._journal: collections.deque[Any] = collections.deque()  # see "feeding" below
        self._flush_lock = threading.Lock()
        self._body_bytes = 0
        self._shed_from = 0  # requests at the front of the history whose bodies the budget took
        self._shed_seq = 0  # the newest of them
        self._seq = 0  # requests recorded so far
        self._listeners: tuple[Callable[[str, Any], None], ...] = ()
        self._lock = threading.Lock()
        self._handlers: dict[type[Event], Callable[[Any], None]] = {
            RequestQueued: self._queued,
            RequestStarted: self._started,
            RequestCompleted: self._completed,
            RunnerLog: self._log,
            RunnerStateChanged: self._state,
            RunnerReady: self._ready,
            RunnerFailed: self._failed,
            RunnerStopped: self._stopped,
            FaultStarted: self._fault,
            FaultApplied: self._fault,
            FaultEnded: self._fault,
            ReloadStarted: self._activity_event,
            RolloutStarted: self._activity_event,
            RolloutFinished: self._activity_event,
            RolloutFailed: self._activity_event,
        }
        self._activity: collections.deque[dict[str, Any]] = collections.deque(maxlen=ACTIVITY)
        self._faults: collections.OrderedDict[tuple[str, str], dict[str, Any]] = collections.OrderedDict()

    # -- feeding -------------------------------------------------------------------------------------
    # The gateway calls these in the middle of each request, on its event loop. They only note what
    # happened in a journal (bodies capped first, kept by reference, never parsed; no lock), and
    # every JOURNAL_BATCH entries, or when anything reads the history, the journal is applied in one
    # go: far cheaper per request than updating the records between the gateway's other work.

    def __call__(self, event: Event) -> None:
        kind = type(event)
        if kind is RequestStarted or kind is RequestCompleted or kind is RequestQueued:
            journal = self._journal
            journal.append(event)
            if len(journal) >= JOURNAL_BATCH:
                self.flush()
            return
        handler = self._handlers.get(kind)
        if handler is not None:
            handler(event)

    def request_body(self, request_id: str, headers: Headers, body: bytes, store: bool) -> None:
        if store:
            if type(body) is not bytes:
                body = bytes(body)  # a buffer the caller may reuse: kept as a copy
            size = len(body)
            kept = body if size <= self.body_cap else body[: self.body_cap]
            entry: tuple[Any, ...] = (_INPUT, request_id, _content_type(headers), kept, size)
        else:
            entry = (_NO_STORE, request_id)
        journal = self._journal
        journal.append(entry)
        if len(journal) >= JOURNAL_BATCH:
            self.flush()

    def response_body(self, request_id: str, headers: Headers, body: bytes) -> None:
        if type(body) is not bytes:
            body = bytes(body)
        size = len(body)
        kept = body if size <= self.body_cap else body[: self.body_cap]
        journal = self._journal
        journal.append((_OUTPUT, request_id, _content_type(headers) if headers else "", kept, size))
        if len(journal) >= JOURNAL_BATCH:
            self.flush()

    def flush(self) -> None:
        """Apply the journal to the records (readers call this first; it is cheap when it is empty)."""
        journal = self._journal
        if not journal:
            return
        with self._flush_lock:
            popleft = journal.popleft
            handlers = self._handlers
            while journal:  # another thread may append meanwhile: deque's appends and pops are atomic
                entry = popleft()
                if type(entry) is tuple:
                    self._apply_body(entry)
                else:
                    handlers[type(entry)](entry)

    def _apply_body(self, entry: tuple[Any, ...]) -> None:
        self._version += 1
        kind, request_id = entry[0], entry[1]
        rec = self._requests.get(request_id)
        if rec is not None and rec.seq <= self._shed_seq and kind is not _NO_STORE:
            rec.bodies_dropped = True  # the budget took the bodies of requests up to this one already
            return
        if kind is _OUTPUT:
            if rec is None or not rec.store_io:
                return
            _, _, content_type, kept, size = entry
            data = rec.output_data
            if data is None:
                rec.output_data = kept
                rec.output_size = size
                rec.output_type = content_type
                self._body_bytes += len(kept)
            else:
                rec.output_size += size  # a streamed answer's next part
                room = self.body_cap - len(data)
                if room <= 0 or not kept:
                    return
                piece = kept[:room]
                rec.output_data = data + piece
                self._body_bytes += len(piece)
        elif rec is None:  # the body came before its request's event
            if len(self._pending) < 10_000:
                self._pending[request_id] = entry
            return
        elif kind is _NO_STORE:
            rec.store_io = False
            return
        else:
            _, _, content_type, kept, size = entry
            rec.input_data = kept
            rec.input_size = size
            rec.input_type = content_type
            self._body_bytes += len(kept)
        if self._body_bytes > self.body_budget:
            self._shed_bodies(rec)

    def _shed_bodies(self, rec: RequestRecord) -> None:
        """Past the budget, the oldest requests lose their bodies (down to 7/8 of it, so this runs
        seldom): a walk from where the last one stopped."""
        target = self.body_budget - self.body_budget // 8
        passed = 0
        for old in itertools.islice(self._requests.values(), self._shed_from, None):
            if old is rec:  # the newest keeps its bodies (the budget is far above one request's)
                break
            passed += 1
            self._shed_seq = old.seq
            if old.input_data is not None or old.output_data is not None:
                self._drop_bodies(old)
                if self._body_bytes <= target:
                    break
        self._shed_from += passed

    def _drop_bodies(self, rec: RequestRecord) -> None:
        dropped = False
        if rec.input_data is not None:
            self._body_bytes -= len(rec.input_data)
            rec.input_data = None
            dropped = True
        if rec.output_data is not None:
            self._body_bytes -= len(rec.output_data)
            rec.output_data = None
            dropped = True
        if dropped:
            rec.bodies_dropped = True

    # -- events -------------------------------------------------------------------------------------
    def _record(self, request_id: str, app: str, endpoint: str, method: str, mode: str, at: float) -> RequestRecord:
        """A new request's record (the caller checked that there is none)."""
        requests = self._requests
        if len(requests) >= self.capacity:
            old = requests.pop(self._order.popleft())  # first, so the new record may reuse its memory
            if old.input_data is not None:
                self._body_bytes -= len(old.input_data)
            if old.output_data is not None:
                self._body_bytes -= len(old.output_data)
            if self._shed_from:
                self._shed_from -= 1
        self._seq = seq = self._seq + 1
        rec = RequestRecord(request_id, app, endpoint or "/", method, mode, at, seq)
        requests[request_id] = rec  # one C call: readers in other threads copy the dict in one too
        self._order.append(request_id)
        if self._pending:
            pending = self._pending.pop(request_id, None)
            if pending is not None:
                self._apply_body(pending)
        return rec

    def _queued(self, event: RequestQueued) -> None:
        rec = self._requests.get(event.request_id)  # a retry's
        if rec is None:
            rec = self._record(event.request_id, event.app, event.endpoint, event.method, "queue", event.ts)
        rec.started_at = None  # a retry waits in the queue again
        self._changed("request", rec)

    def _started(self, event: RequestStarted) -> None:
        rec = self._requests.get(event.request_id)
        if rec is None:
            received = event.ts - event.queue_wait
            rec = self._record(event.request_id, event.app, event.endpoint, event.method, event.mode, received)
        rec.runner = event.runner
        rec.started_at = event.ts
        rec.attempts += 1
        self._version += 1
        if self._listeners:
            self._notify("request", rec)

    def _completed(self, event: RequestCompleted) -> None:
        rec = self._requests.get(event.request_id)
        ts = event.ts
        if rec is None:
            received = ts - event.seconds - event.queue_wait
            rec = self._record(event.request_id, event.app, event.endpoint, event.method, event.mode, received)
        runner = event.runner
        total = ts - rec.received_at
        if total < 0.0:
            total = 0.0
        if runner:
            rec.runner = runner
            rec.execution = event.seconds
            wait = ts - event.seconds - rec.received_at
            rec.queue_wait = wait if wait > 0.0 else 0.0
            if rec.started_at is None:
                rec.started_at = ts - event.seconds
        else:
            rec.execution = 0.0
            rec.queue_wait = total
        rec.finished_at = ts
        rec.status = event.status_code
        rec.error_type = event.error_type
        self._counters.observe(event.app, event.status_code, rec.received_at, total)
        self._version += 1
        if self._listeners:
            self._notify("request", rec)

    def _runner(self, app: str, runner_id: str, at: float) -> RunnerRecord:
        found = self._runners.get(runner_id)
        if found is not None:
            return found
        info = self.apps.get(app, AppInfo())
        found = RunnerRecord(runner_id, app, info.machine_type, info.gpus, at)
        with self._lock:
            self._runners[runner_id] = found
            if len(self._runners) > self.runner_capacity:
                for rid, old in list(self._runners.items()):
                    if old.stopped_at is not None:
                        del self._runners[rid]
                        break
                else:
                    self._runners.popitem(last=False)
        return found

    def _state(self, event: RunnerStateChanged) -> None:
        runner = self._runner(event.app, event.runner, event.ts)
        if not runner.states or runner.states[-1][0] != event.state:
            runner.states.append((event.state, event.ts))
        if event.state == "TERMINATED" and runner.stopped_at is None:
            runner.stopped_at = event.ts
        if event.state in ("TERMINATED", "FAILURE_DELAY", "PENDING", "SETUP") or len(runner.states) <= 2:
            self._changed("runner", runner)

    def _ready(self, event: RunnerReady) -> None:
        runner = self._runner(event.app, event.runner, event.ts)
        runner.timeline = dict(event.timeline)
        runner.cold_start = event.cold_start
        runner.ready_at = event.ts
        runner.revision = event.revision
        self._changed("runner", runner)

    def _failed(self, event: RunnerFailed) -> None:
        runner = self._runner(event.app, event.runner, event.ts)
        runner.error_type = event.error_type
        runner.error = event.message
        if event.logs and not runner.logs:
            for line in event.logs.splitlines()[-LOG_LINES:]:
                runner.logs.append((event.ts, "stdout", line))
        self._changed("runner", runner)

    def _stopped(self, event: RunnerStopped) -> None:
        runner = self._runner(event.app, event.runner, event.ts)
        runner.stop_reason = event.reason
        if runner.stopped_at is None:
            runner.stopped_at = event.ts
        self._changed("runner", runner)

    def _log(self, event: RunnerLog) -> None:
        runner = self._runners.get(event.runner)
        if runner is None:
            runner = self._runner(event.app, event.runner, event.ts)
        runner.logs.append((event.ts, event.stream, event.line))
        if self._listeners:
            self._changed("log", (event.runner, event.ts, event.stream, event.line))

    def _fault(self, event: FaultStarted | FaultApplied | FaultEnded) -> None:
        key = (event.app, event.fault)
        with self._lock:
            row = self._faults.get(key)
            if isinstance(event, FaultStarted):
                row = self._faults[key] = {
                    "id": event.fault,
                    "app": event.app,
                    "kind": event.fault_kind,
                    "description": event.description,
                    "started": event.ts,
                    "ended": None,
                    "reason": None,
                    "applied": 0,
                    "targets": [],
                }
                while len(self._faults) > ACTIVITY:
                    self._faults.popitem(last=False)
            elif row is not None and isinstance(event, FaultApplied):
                row["applied"] += 1
                if event.fault_kind in ("kill", "starts", "data") and len(row["targets"]) < 100:
                    row["targets"].append(event.target)
            elif row is not None and isinstance(event, FaultEnded):
                row["ended"], row["reason"], row["applied"] = event.ts, event.reason, event.applied
        if not isinstance(event, FaultApplied) or event.fault_kind in ("kill", "starts", "data"):
            self._activity_event(event)
        else:
            self._changed("fault", key)

    def _activity_event(self, event: Event) -> None:
        self._activity.append({"ts": event.ts, "app": event.app, "event": event.kind, "text": activity_text(event)})
        self._changed("activity", event)

    # -- listeners (live updates) ---------------------------------------------------------------------
    def listen(self, fn: Callable[[str, Any], None]) -> Callable[[], None]:
        """Call ``fn(kind, item)`` on every change ("request", "runner", "log"); returns the unsubscribe."""
        with self._lock:
            self._listeners = (*self._listeners, fn)

        def stop() -> None:
            with self._lock:
                self._listeners = tuple(f for f in self._listeners if f is not fn)

        return stop

    def _changed(self, kind: str, item: Any) -> None:
        self._version += 1
        if self._listeners:
            self._notify(kind, item)

    def _notify(self, kind: str, item: Any) -> None:
        for fn in self._listeners:
            with contextlib.suppress(Exception):
                fn(kind, item)

    # -- reading ----------------------------------------------------------------------------------------
    # Each reader applies the journal first, so it sees every request the gateway has handed over.

    @property
    def version(self) -> int:
        """Bumped on every change a reader may want to see (those still in the journal included)."""
        return self._version + len(self._journal)

    @property
    def counters(self) -> Counters:
        self.flush()
        return self._counters

    def request(self, request_id: str) -> RequestRecord | None:
        self.flush()
        return self._requests.get(request_id)

    def requests(self) -> list[RequestRecord]:
        """Every kept request, oldest first (a snapshot).

        Copied in one C call, which no other thread's write can interleave with (writes take no lock).
        """
        self.flush()
        return list(self._requests.values())

    def newest(self) -> Iterator[RequestRecord]:
        """Kept requests, newest first (a snapshot taken now)."""
        return reversed(self.requests())

    def latest(self, limit: int) -> list[RequestRecord]:
        """The ``limit`` newest requests, newest first, without copying the rest (a snapshot)."""
        self.flush()
        return list(itertools.islice(reversed(self._requests.values()), max(0, limit)))

    def recent(self, app: str, since: float) -> tuple[int, int]:
        """(finished, 2xx) of ``app``'s requests received since ``since`` (at most an hour back; counted
        as they end, so also those the history no longer keeps)."""
        return self.counters.recent(app, since)

    def runner(self, runner_id: str) -> RunnerRecord | None:
        return self._runners.get(runner_id)

    def faults(self, app: str | None = None) -> list[dict[str, Any]]:
        """Faults injected so far (falemu chaos), oldest first, each a copy."""
        with self._lock:
            rows = [dict(row, targets=list(row["targets"])) for row in self._faults.values()]
        return [r for r in rows if app is None or r["app"] == app]

    def activity(self, app: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """The latest fault and rollout events (newest last)."""
        found = [a for a in list(self._activity) if app is None or a["app"] == app]
        return found[-limit:] if limit > 0 else []

    def runners(self, app: str | None = None) -> list[RunnerRecord]:
        with self._lock:
            found = list(self._runners.values())
        return [r for r in found if app is None or r.app == app]

    def request_logs(
        self, rec: RequestRecord, before: float = 0.0, after: float = LOG_GRACE
    ) -> list[tuple[float, str, str]]:
        """The log lines its runner wrote while it ran (``before``/``after`` widen the window)."""
        self.flush()
        runner = self._runners.get(rec.runner) if rec.runner else None
        if runner is None or rec.started_at is None:
            return []
        until = (rec.finished_at if rec.finished_at is not None else self.clock()) + after
        return runner.log_lines(rec.started_at - before, until)

    @property
    def body_bytes(self) -> int:
        self.flush()
        return self._body_bytes

    def __len__(self) -> int:
        self.flush()
        return len(self._requests)


def load(history: History, events: Iterable[Event]) -> History:
    """Feed ``events`` (a bus's history, say) into ``history``; returns it."""
    for event in events:
        history(event)
    return history


def activity_text(event: Event) -> str:
    """One line about a fault or rollout event, as the dashboard shows it."""
    if isinstance(event, FaultStarted):
        return f"fault {event.fault} in effect: {event.description}"
    if isinstance(event, FaultApplied):
        return f"fault {event.fault}: {event.target}: {event.detail}"
    if isinstance(event, FaultEnded):
        return f"fault {event.fault} ended ({event.reason}); it hit {event.applied}"
    if isinstance(event, ReloadStarted):
        changed = ", ".join(event.changes[:3]) + (" ..." if len(event.changes) > 3 else "")
        return f"making revision r{event.revision}" + (f" ({changed} changed)" if changed else "")
    if isinstance(event, RolloutStarted):
        return f"rolling out r{event.revision} ({event.strategy}, {event.runners} runner(s)); r{event.previous} serves"
    if isinstance(event, RolloutFinished):
        gap = f", {event.unavailable:.1f} s without a runner" if event.unavailable else ""
        return f"r{event.revision} serves ({event.strategy}, {event.seconds:.1f} s after the change{gap})"
    if isinstance(event, RolloutFailed):
        return f"r{event.revision} failed ({event.stage}): {event.message}; r{event.serving} keeps serving"
    return event.kind
