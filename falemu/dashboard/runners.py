"""The runner side of the dashboard's history: runners' states, start-up timelines and log lines, and
the fault and rollout activity (:class:`~falemu.dashboard.history.History` builds on it)."""

from __future__ import annotations

import collections
import contextlib
import itertools
import threading
from collections.abc import Callable, Mapping
from typing import Any

from falemu.dashboard.records import LOG_LINES, AppInfo, RunnerRecord
from falemu.events import (
    Event,
    FaultApplied,
    FaultEnded,
    FaultStarted,
    ReloadStarted,
    RolloutFailed,
    RolloutFinished,
    RolloutStarted,
    RunnerFailed,
    RunnerLog,
    RunnerReady,
    RunnerStateChanged,
    RunnerStopped,
)

RUNNER_CAPACITY = 500
ACTIVITY = 1_000  # fault and rollout events kept (falemu chaos, falemu up --watch)
_TOLD_STATES = frozenset(("TERMINATED", "FAILURE_DELAY", "PENDING", "SETUP"))  # readers hear of these at once
_POPLEFT = collections.deque.popleft


class RunnerHistory:
    """The last ``runner_capacity`` runners of an emulator and its fault and rollout activity.

    Events are applied as they come, except a runner's state changes: they wait in a deque (a bus
    appends to it without a call into Python) until a reader or the runner's next other event.
    """

    def __init__(self, apps: Mapping[str, AppInfo] | None = None, *, runner_capacity: int = RUNNER_CAPACITY) -> None:
        self.apps: dict[str, AppInfo] = dict(apps or {})
        self.runner_capacity = runner_capacity
        self._version = 0  # bumped on every change a reader may want to see
        self._listeners: tuple[Callable[[str, Any], None], ...] = ()
        self._lock = threading.Lock()  # the runners, faults and listeners
        self._flush_lock = threading.Lock()  # applying what waits
        self._runners: collections.OrderedDict[str, RunnerRecord] = collections.OrderedDict()
        self._states: collections.deque[Any] = collections.deque()  # runners' state changes, to apply
        self._activity: collections.deque[dict[str, Any]] = collections.deque(maxlen=ACTIVITY)
        self._faults: collections.OrderedDict[tuple[str, str], dict[str, Any]] = collections.OrderedDict()
        self._handlers: dict[type[Event], Callable[[Any], None]] = {  # events applied as they come
            RunnerLog: self._log,
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

    def flush(self) -> None:
        """Apply what waits (readers call this first)."""
        self._settle_states()

    def _settle_states(self) -> None:
        if self._states:
            with self._flush_lock:
                self._apply_states()

    def _apply_states(self) -> None:
        """Apply the runners' state changes that came since (with the flush lock held)."""
        states = self._states
        runners = self._runners
        n = len(states)
        self._version += n
        for entry in map(_POPLEFT, itertools.repeat(states, n)):
            runner = runners.get(entry.runner)
            if runner is None or entry.state in _TOLD_STATES or len(runner.states) <= 2:
                self._state(entry)
            elif runner.states[-1][0] != entry.state:
                runner.states.append((entry.state, entry.ts))

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
        self._settle_states()  # the runner's earlier states may wait
        runner = self._runner(event.app, event.runner, event.ts)
        runner.timeline = dict(event.timeline)
        runner.cold_start = event.cold_start
        runner.ready_at = event.ts
        runner.revision = event.revision
        self._changed("runner", runner)

    def _failed(self, event: RunnerFailed) -> None:
        self._settle_states()  # the runner's earlier states may wait
        runner = self._runner(event.app, event.runner, event.ts)
        runner.error_type = event.error_type
        runner.error = event.message
        if event.logs and not runner.logs:
            for line in event.logs.splitlines()[-LOG_LINES:]:
                runner.logs.append((event.ts, "stdout", line))
        self._changed("runner", runner)

    def _stopped(self, event: RunnerStopped) -> None:
        self._settle_states()  # the runner's earlier states may wait
        runner = self._runner(event.app, event.runner, event.ts)
        runner.stop_reason = event.reason
        if runner.stopped_at is None:
            runner.stopped_at = event.ts
        self._changed("runner", runner)

    def _log(self, event: RunnerLog) -> None:
        runner = self._runners.get(event.runner)
        if runner is None:
            self._settle_states()  # its first states may wait
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

    def _changed(self, kind: str, item: Any) -> None:
        self._version += 1
        if self._listeners:
            self._notify(kind, item)

    def _notify(self, kind: str, item: Any) -> None:
        for fn in self._listeners:
            with contextlib.suppress(Exception):
                fn(kind, item)

    def runner(self, runner_id: str) -> RunnerRecord | None:
        self.flush()
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
        self.flush()
        with self._lock:
            found = list(self._runners.values())
        return [r for r in found if app is None or r.app == app]


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
