"""Typed events the core emits; the CLI renders them and tests assert on them.

Nobody has to parse log text: ``falemu up`` prints these, ``--json`` prints them as JSON lines, and
the pytest fixtures keep them in ``falemu_app.events``.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(slots=True)
class Event:
    app: str
    ts: float = field(default_factory=time.time, kw_only=True)

    @property
    def kind(self) -> str:
        return type(self).__name__

    def to_dict(self) -> dict[str, Any]:
        """The event's fields (values as they are, not copied) and its kind under ``event``."""
        data = {name: getattr(self, name) for name in _field_names(type(self))}
        data["event"] = self.kind
        return data


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def _field_names(cls: type[Event]) -> tuple[str, ...]:
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = tuple(f.name for f in dataclasses.fields(cls))
    return names


@dataclass(slots=True)
class BuildStarted(Event):
    image: str
    steps: int


@dataclass(slots=True)
class BuildStep(Event):
    step: int
    steps: int
    text: str


@dataclass(slots=True)
class BuildOutput(Event):
    line: str


@dataclass(slots=True)
class BuildFinished(Event):
    image: str
    cached: bool
    seconds: float


@dataclass(slots=True)
class RunnerStateChanged(Event):
    runner: str
    state: str  # fal's runner states: PENDING, SETUP, IDLE, RUNNING, DRAINING, TERMINATING, TERMINATED, FAILURE_DELAY


@dataclass(slots=True)
class RunnerReady(Event):
    runner: str
    address: str
    timeline: dict[str, float]  # phase -> seconds
    cold_start: bool = True
    revision: int = 1  # the app revision it runs
    early: bool = False  # begun as `falemu up` started, from the plan of its last run (falemu.prelaunch)


@dataclass(slots=True)
class RunnerFailed(Event):
    runner: str
    error_type: str
    message: str
    logs: str = ""


@dataclass(slots=True)
class RunnerStopped(Event):
    runner: str
    reason: str


@dataclass(slots=True)
class RunnerLog(Event):
    runner: str
    line: str
    stream: str = "stdout"


@dataclass(slots=True)
class Notice(Event):
    level: str  # info | warning
    message: str


@dataclass(slots=True)
class RequestQueued(Event):
    request_id: str
    queue_position: int
    endpoint: str = ""  # the path after /{owner}/{app}, e.g. "/greet"
    method: str = "POST"


@dataclass(slots=True)
class RequestStarted(Event):
    request_id: str
    runner: str
    endpoint: str = ""  # the path after /{owner}/{app}, e.g. "/greet"
    method: str = ""
    mode: str = "sync"  # sync | queue
    queue_wait: float = 0.0  # seconds from the gateway's receipt (or the queue submit) to this start


@dataclass(slots=True)
class RequestCompleted(Event):
    """A request's end. ``seconds`` is its execution on the runner (0 when it never reached one);
    ``queue_wait`` the time before (waiting for a runner, cold starts and queue retries included)."""

    request_id: str
    runner: str
    status_code: int
    seconds: float
    endpoint: str = ""
    method: str = ""
    mode: str = "sync"  # sync | queue
    error_type: str | None = None  # fal's error type for platform errors and failed runner answers
    queue_wait: float = 0.0


@dataclass(slots=True)
class QueueResumed(Event):
    """The durable queue handed requests left from the last run back to their apps' runners."""

    queued: int  # requests queued again (in submission order)
    failed: int  # requests that could not run again (cut off in flight and not retryable)
    folder: str


@dataclass(slots=True)
class QueueStopped(Event):
    """``falemu up`` stopped: what its durable queue keeps for the next start."""

    queued: int  # requests left queued: they run when their app is next served
    requeued: int  # of those, requests cut off on their runner by the stop and queued again
    failed: int  # requests cut off on their runner that may not run again: completed with an error
    finished: int  # requests in flight at the stop that finished within the grace period
    results: int  # completed results kept (for 1 h, or 1 h after they were last fetched)
    folder: str


@dataclass(slots=True)
class ScaledUp(Event):
    runners: int
    target: int


@dataclass(slots=True)
class ScaledDown(Event):
    runners: int
    target: int
    reason: str


@dataclass(slots=True)
class ReloadStarted(Event):
    """A change in the app's build context (``falemu up --watch``) or a reload call: a new revision is made."""

    revision: int
    changes: list[str]  # changed paths relative to the project folder (empty for a reload call)


@dataclass(slots=True)
class RolloutStarted(Event):
    revision: int
    previous: int  # the revision serving until the switch
    strategy: str  # rolling | recreate (the app's deployment_strategy)
    runners: int  # runners of the new revision started
    image: str


@dataclass(slots=True)
class RolloutFinished(Event):
    revision: int  # now serving
    previous: int  # retired: its idle runners stop, busy ones finish their requests first
    strategy: str
    seconds: float  # from the change (or reload call) to the new revision serving
    unavailable: float = 0.0  # seconds no runner took new requests (recreate's gap; 0 for rolling)


@dataclass(slots=True)
class RolloutFailed(Event):
    revision: int  # the revision that could not be made or started
    serving: int  # the revision that keeps serving
    stage: str  # config | build | start
    error_type: str
    message: str
    logs: str = ""


@dataclass(slots=True)
class FaultStarted(Event):
    """A fault was injected (``falemu chaos``, ``falemu_app.faults``)."""

    fault: str  # its id: f1, f2, ...
    fault_kind: str  # kill | starts | error | latency | cut | data
    description: str
    spec: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class FaultApplied(Event):
    """A fault hit a request, a runner start or a runner."""

    fault: str
    fault_kind: str
    target: str  # a request id or a runner id
    detail: str = ""


@dataclass(slots=True)
class FaultEnded(Event):
    fault: str
    fault_kind: str
    reason: str  # count | window | cleared | shutdown
    applied: int  # what it hit in all


class EventSink(Protocol):
    def __call__(self, event: Event) -> None: ...


class BodyRecorder(Protocol):
    """Where the gateway hands the bodies of requests it forwards (the dashboard's request history).

    Called on the gateway's event loop in the middle of a request: implementations return at once,
    never raise, and keep what they need by reference (capped, never parsed there). Headers are the
    caller's forwarded headers (request) or the runner's (response); ``store`` is False when the
    caller sent ``X-Fal-Store-IO: 0``. ``response_body`` may be called once per streamed chunk.
    """

    def request_body(self, request_id: str, headers: list[tuple[bytes, bytes]], body: bytes, store: bool) -> None: ...

    def response_body(self, request_id: str, headers: list[tuple[bytes, bytes]], body: bytes) -> None: ...


_Subscription = tuple[Callable[[Event], None], tuple[type[Event], ...] | None]  # (fn, kinds or None: all)


class EventBus:
    """Fan-out of events to subscribers; thread-safe, keeps the last ``history`` events.

    A subscriber takes every event, or only those of the ``kinds`` it names (and their subclasses):
    an event then costs nothing for subscribers that do not take it. Who takes which kind is worked
    out once per kind.
    """

    def __init__(self, history: int = 10_000) -> None:
        self._entries: tuple[_Subscription, ...] = ()  # in the order they came; replaced, never changed in place
        self._routes: dict[type[Event], tuple[Callable[[Event], None], ...]] = {}  # kind -> its subscribers
        self._lock = threading.Lock()
        self._history: collections.deque[Event] = collections.deque(maxlen=history)
        self._reported: set[Callable[[Event], None]] = set()

    def subscribe(self, fn: Callable[[Event], None], kinds: Iterable[type[Event]] | None = None) -> Callable[[], None]:
        """Call ``fn`` with every event (or only those of ``kinds``); returns the unsubscribe."""
        entry = (fn, None if kinds is None else tuple(kinds))
        with self._lock:
            self._set_entries((*self._entries, entry))

        def unsubscribe() -> None:
            with self._lock:
                if any(e is entry for e in self._entries):
                    self._set_entries(tuple(e for e in self._entries if e is not entry))

        return unsubscribe

    def _set_entries(self, entries: tuple[_Subscription, ...]) -> None:
        # entries first, then a fresh route table: a route worked out meanwhile lands in the old table
        self._entries = entries
        self._routes = {}

    def _route(self, kind: type[Event]) -> tuple[Callable[[Event], None], ...]:
        return tuple(fn for fn, kinds in self._entries if kinds is None or issubclass(kind, kinds))

    def __call__(self, event: Event) -> None:
        self._history.append(event)  # one C call (atomic under the GIL); readers copy it in one too
        routes = self._routes
        kind = type(event)
        subscribers = routes.get(kind)
        if subscribers is None:
            subscribers = routes[kind] = self._route(kind)
        for fn in subscribers:
            try:
                fn(event)
            except OSError as exc:
                # Whoever emitted (often the gateway, in the middle of a request) must not fail
                # because a reader's output is gone (`falemu up | head`): that reader is dropped.
                self._drop(fn, exc)
            except Exception as exc:
                self._report(fn, exc)

    def _drop(self, fn: Callable[[Event], None], exc: Exception) -> None:
        with self._lock:
            if not any(f is fn for f, _ in self._entries):
                return
            self._set_entries(tuple(e for e in self._entries if e[0] is not fn))
        _warn(f"an event subscriber's output failed, it gets no more events: {exc!r}")

    def _report(self, fn: Callable[[Event], None], exc: Exception) -> None:
        """A subscriber's own error: said once per subscriber; it keeps getting events."""
        with self._lock:
            if fn in self._reported:
                return
            self._reported.add(fn)
        _warn(f"an event subscriber failed on {type(exc).__name__}: {exc} (further failures are not shown)")

    @property
    def history(self) -> list[Event]:
        return list(self._history.copy())


def _warn(message: str) -> None:
    with contextlib.suppress(Exception):
        sys.stderr.write(f"falemu: {message}\n")


def null_sink(event: Event) -> None:
    """An event sink that drops everything."""
