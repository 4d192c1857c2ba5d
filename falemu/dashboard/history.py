"""The request history and runner records behind the dashboard, fed by the event bus and the gateway.

:class:`History` subscribes to the :class:`~falemu.events.EventBus` (requests queued, started and
completed; runner states, readiness, failures and log lines) and is the gateway's
:class:`~falemu.events.BodyRecorder` for inputs and outputs. Everything is bounded:

- the last ``capacity`` requests (default 50,000) with their timings, status, runner and error type;
- their bodies, each capped at ``body_cap`` bytes (64 KiB) and all together at ``body_budget`` bytes
  (64 MiB): past the budget the oldest requests lose their bodies first and keep everything else;
- the last ``runner_capacity`` runners, each with its states over time, its start-up timeline and its
  last ``log_lines`` log lines (a request's logs are its runner's lines while it ran).

Recording is cheap by design: an event is one dict lookup and a few attribute writes; a body is kept
by reference (a slice when it is over the cap), never copied or parsed on the gateway's hot path.
``X-Fal-Store-IO: 0`` keeps a request's bodies out, as on fal. Nothing here holds a key or a secret:
the gateway consumes fal keys before the headers reach the recorder, and only content types are kept
of the headers.
"""

from __future__ import annotations

import bisect
import collections
import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

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

Headers = list[tuple[bytes, bytes]]

CAPACITY = 50_000
BODY_CAP = 64 * 1024
BODY_BUDGET = 64 * 1024 * 1024
RUNNER_CAPACITY = 500
LOG_LINES = 5_000
ACTIVITY = 1_000  # fault and rollout events kept (falemu chaos, falemu up --watch)
LOG_GRACE = 1.0  # a runner's lines this long after a request ended still belong to it (log readers lag)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


@dataclass(slots=True)
class Body:
    """The first ``body_cap`` bytes of a request's or response's body."""

    data: bytes
    size: int  # every byte seen, also those past the cap
    content_type: str = ""

    @property
    def truncated(self) -> bool:
        return self.size > len(self.data)


@dataclass(slots=True)
class RequestRecord:
    """One request as the dashboard shows it. Times are wall-clock seconds (``time.time()``)."""

    id: str
    app: str
    endpoint: str  # the path after /{owner}/{app}, with a leading slash
    method: str
    mode: str  # sync | queue
    received_at: float
    started_at: float | None = None
    finished_at: float | None = None
    queue_wait: float | None = None  # receipt to the start of execution: queue, cold start, retries
    execution: float | None = None  # on the runner (the last attempt)
    status: int | None = None
    error_type: str | None = None
    runner: str = ""
    attempts: int = 0
    store_io: bool = True
    input: Body | None = None
    output: Body | None = None
    bodies_dropped: bool = False  # the body budget ran out and this request's bodies were let go

    @property
    def state(self) -> str:
        if self.finished_at is not None:
            return "done"
        return "running" if self.started_at is not None else "queued"

    @property
    def total(self) -> float | None:
        return None if self.finished_at is None else max(0.0, self.finished_at - self.received_at)

    @property
    def startup(self) -> float | None:
        """fal's request startup: gateway receipt to execution start (queue wait plus any cold start)."""
        return self.queue_wait


@dataclass(slots=True)
class RunnerRecord:
    """One runner of an app: its states over time, its start-up stages and its recent log lines."""

    id: str
    app: str
    machine_type: str
    gpus: int
    created_at: float
    states: list[tuple[str, float]] = field(default_factory=list)  # (state, since), in order
    timeline: dict[str, float] = field(default_factory=dict)  # start-up stage -> seconds
    cold_start: bool = False  # started while a request waited for it
    ready_at: float | None = None
    stopped_at: float | None = None
    stop_reason: str = ""
    error_type: str | None = None
    error: str = ""
    revision: int = 1  # the app revision it runs (falemu up --watch)
    logs: collections.deque[tuple[float, str, str]] = field(
        default_factory=lambda: collections.deque(maxlen=LOG_LINES)
    )  # (ts, stream, line)

    @property
    def state(self) -> str:
        return self.states[-1][0] if self.states else "PENDING"

    def log_lines(self, since: float | None = None, until: float | None = None) -> list[tuple[float, str, str]]:
        lines = list(self.logs)  # one C call: safe against appends from the log threads
        if since is None and until is None:
            return lines
        keys = [ts for ts, _, _ in lines]
        lo = 0 if since is None else bisect.bisect_left(keys, since)
        hi = len(lines) if until is None else bisect.bisect_right(keys, until)
        return lines[lo:hi]


@dataclass(frozen=True)
class AppInfo:
    """What the history needs to know of an app's config."""

    machine_type: str = "XS"
    gpus: int = 0


class Counters:
    """Cumulative per-app counters for /metrics, updated as requests end (no scan of the history)."""

    def __init__(self) -> None:
        self.received: collections.Counter[str] = collections.Counter()
        self.completed: collections.Counter[tuple[str, str, int]] = collections.Counter()  # app, method, status
        self.latency: dict[str, list[int]] = {}  # app -> cumulative bucket counts (+Inf last)
        self.latency_sum: dict[str, float] = collections.defaultdict(float)

    def observe(self, app: str, method: str, status: int, seconds: float) -> None:
        self.completed[(app, method, status)] += 1
        buckets = self.latency.get(app)
        if buckets is None:
            buckets = self.latency[app] = [0] * (len(LATENCY_BUCKETS) + 1)
        buckets[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.latency_sum[app] += seconds


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
        self.counters = Counters()
        self.version = 0  # bumped on every change a reader may want to see
        self._requests: collections.OrderedDict[str, RequestRecord] = collections.OrderedDict()
        self._runners: collections.OrderedDict[str, RunnerRecord] = collections.OrderedDict()
        self._pending: dict[str, tuple[Body | None, bool]] = {}  # bodies that came before their request's event
        self._body_bytes = 0
        self._with_bodies: collections.deque[str] = collections.deque()  # ids holding bodies, oldest first
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
    def __call__(self, event: Event) -> None:
        handler = self._handlers.get(type(event))
        if handler is not None:
            handler(event)

    def request_body(self, request_id: str, headers: Headers, body: bytes, store: bool) -> None:
        kept = self._body(headers, body) if store else None
        rec = self._requests.get(request_id)
        if rec is None:
            if len(self._pending) < 10_000:
                self._pending[request_id] = (kept, store)
            return
        rec.store_io = store
        if kept is not None:
            rec.input = kept
            self._account(rec, len(kept.data))

    def response_body(self, request_id: str, headers: Headers, body: bytes) -> None:
        rec = self._requests.get(request_id)
        if rec is None or not rec.store_io:
            return
        out = rec.output
        if out is None:
            rec.output = out = self._body(headers, body)
            self._account(rec, len(out.data))
            return
        out.size += len(body)
        room = self.body_cap - len(out.data)
        if room > 0 and body:
            piece = body[:room]
            out.data += piece
            self._account(rec, len(piece))

    def _body(self, headers: Headers, body: bytes) -> Body:
        content_type = ""
        for name, value in headers:
            if name == b"content-type":
                content_type = value.decode("latin-1")
                break
        data = body if len(body) <= self.body_cap else body[: self.body_cap]
        return Body(bytes(data), len(body), content_type)

    def _account(self, rec: RequestRecord, size: int) -> None:
        if size <= 0:
            return
        if not self._with_bodies or self._with_bodies[-1] != rec.id:
            self._with_bodies.append(rec.id)
        self._body_bytes += size
        while self._body_bytes > self.body_budget and self._with_bodies:
            old = self._requests.get(self._with_bodies.popleft())
            if old is None or old is rec:
                continue
            self._drop_bodies(old)

    def _drop_bodies(self, rec: RequestRecord) -> None:
        for body in (rec.input, rec.output):
            if body is not None:
                self._body_bytes -= len(body.data)
        if rec.input is not None or rec.output is not None:
            rec.bodies_dropped = True
        rec.input = rec.output = None

    # -- events -------------------------------------------------------------------------------------
    def _record(self, request_id: str, app: str, endpoint: str, method: str, mode: str, at: float) -> RequestRecord:
        rec = self._requests.get(request_id)
        if rec is not None:
            return rec
        rec = RequestRecord(request_id, app, endpoint or "/", method, mode, at)
        pending = self._pending.pop(request_id, None) if self._pending else None
        if pending is not None:
            rec.input, rec.store_io = pending
        with self._lock:
            self._requests[request_id] = rec
            while len(self._requests) > self.capacity:
                _, old = self._requests.popitem(last=False)
                self._drop_bodies(old)
        if rec.input is not None:
            self._account(rec, len(rec.input.data))
        return rec

    def _queued(self, event: RequestQueued) -> None:
        rec = self._record(event.request_id, event.app, event.endpoint, event.method, "queue", event.ts)
        if rec.attempts == 0:
            self.counters.received[event.app] += 1
        rec.started_at = None  # a retry waits in the queue again
        self._changed("request", rec)

    def _started(self, event: RequestStarted) -> None:
        received = event.ts - event.queue_wait
        rec = self._requests.get(event.request_id)
        if rec is None:
            rec = self._record(event.request_id, event.app, event.endpoint, event.method, event.mode, received)
            self.counters.received[event.app] += 1
        rec.runner = event.runner
        rec.started_at = event.ts
        rec.attempts += 1
        self._changed("request", rec)

    def _completed(self, event: RequestCompleted) -> None:
        rec = self._requests.get(event.request_id)
        if rec is None:
            received = event.ts - event.seconds - event.queue_wait
            rec = self._record(event.request_id, event.app, event.endpoint, event.method, event.mode, received)
            self.counters.received[event.app] += 1
        if event.runner:
            rec.runner = event.runner
        rec.finished_at = event.ts
        rec.status = event.status_code
        rec.error_type = event.error_type
        rec.execution = event.seconds if event.runner else 0.0
        rec.queue_wait = max(0.0, event.ts - event.seconds - rec.received_at) if event.runner else rec.total
        if rec.started_at is None and event.runner:
            rec.started_at = event.ts - event.seconds
        self.counters.observe(event.app, rec.method, event.status_code, rec.total or 0.0)
        self._changed("request", rec)

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
        self.version += 1
        for fn in self._listeners:
            with contextlib.suppress(Exception):
                fn(kind, item)

    # -- reading ----------------------------------------------------------------------------------------
    def request(self, request_id: str) -> RequestRecord | None:
        return self._requests.get(request_id)

    def requests(self) -> list[RequestRecord]:
        """Every kept request, oldest first (a snapshot)."""
        with self._lock:
            return list(self._requests.values())

    def newest(self) -> Iterator[RequestRecord]:
        """Kept requests, newest first (a snapshot taken now)."""
        return reversed(self.requests())

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
        runner = self._runners.get(rec.runner) if rec.runner else None
        if runner is None or rec.started_at is None:
            return []
        until = (rec.finished_at if rec.finished_at is not None else self.clock()) + after
        return runner.log_lines(rec.started_at - before, until)

    @property
    def body_bytes(self) -> int:
        return self._body_bytes

    def __len__(self) -> int:
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
