"""Faults: what can go wrong, for how long, and which requests or runner starts it hits.

Pure: no clock, no I/O. The caller passes ``now`` (the emulator's clock) and gets decisions back;
:mod:`falemu.chaos.injector` applies them through the gateway's and the controller's hooks.

Kinds (each for one app):

``kill``
    kill a runner (SIGKILL; its requests in flight break): ``runner`` names one, else the one that
    takes the next request, ``after`` seconds after it took it (0: at once, mid-request when the
    request takes longer). ``count`` runners (default 1).
``starts``
    the next ``count`` runner starts fail (``mode="fail"``: as a ``setup()`` that raises) or are slow
    (``mode="slow"``: ``delay`` seconds more in SETUP; past ``startup_timeout`` that is fal's
    ``startup_timeout`` failure). Failed starts drive fal's FAILURE_DELAY back-off.
``error``
    the gateway answers ``status`` (503, 504 or 429) with fal's error type instead of passing the
    request to a runner.
``latency``
    ``delay`` seconds more before a request reaches its runner.
``cut``
    the runner connection is cut after ``after_bytes`` bytes of the response body.
``data``
    ``/data`` is read-only (``mode="read-only"``) or full (``mode="full"``) for the next ``runners``
    runner starts.

Bounds: every fault ends. ``count`` is how many requests (error, latency, cut), starts (starts) or
kills (kill) it hits; ``seconds`` a window from its start; request faults also take ``share``, the
part of the requests they hit (0.5: every other one; exact, not random). A request fault with neither
bound gets a window of :data:`DEFAULT_WINDOW` seconds; a data fault always has a window.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Protocol

from falemu.errors import UsageError

KINDS = ("kill", "starts", "error", "latency", "cut", "data")
REQUEST_KINDS = frozenset({"error", "latency", "cut"})
DEFAULT_WINDOW = 60.0
# fal's error types for a platform answer of each status (docs: model-apis/request-errors); fal
# documents no error type for 429.
ERROR_TYPES: dict[int, tuple[str | None, ...]] = {
    503: (
        "runner_scheduling_failure",
        "runner_connection_timeout",
        "runner_disconnected",
        "runner_connection_refused",
        "runner_connection_error",
    ),
    504: ("request_timeout", "startup_timeout"),
    429: (None,),
}
DETAILS = {
    503: "No runner could be allocated to handle the request",
    504: "Request timed out",
    429: "Too many concurrent requests",
}
START_MODES = ("fail", "slow")
DATA_MODES = ("read-only", "full")


@dataclass(frozen=True)
class FaultSpec:
    """One fault as asked for (``falemu chaos``, ``falemu_app.faults``); see the module docstring."""

    kind: str
    app: str
    count: int | None = None
    seconds: float | None = None
    share: float = 1.0
    status: int | None = None
    error_type: str | None = None
    delay: float | None = None
    after_bytes: int | None = None
    runner: str | None = None
    after: float = 0.0
    mode: str | None = None
    runners: int = 1

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    def describe(self) -> str:
        """What it does, in one line."""
        kind = self.kind
        if kind == "kill":
            who = f"runner {self.runner}" if self.runner else "the runner that takes the next request"
            when = f", {self.after:g} s after it took it" if self.after and not self.runner else ""
            text = f"kill {who}{when}"
        elif kind == "starts":
            text = (
                "the next runner starts fail (setup() raises)"
                if self.mode == "fail"
                else f"the next runner starts take {self.delay:g} s more"
            )
        elif kind == "error":
            typed = f" ({self.error_type})" if self.error_type else ""
            text = f"the gateway answers {self.status}{typed}"
        elif kind == "latency":
            text = f"{self.delay:g} s more before requests reach a runner"
        elif kind == "cut":
            text = f"runner connections cut after {self.after_bytes} bytes of the response"
        else:
            text = f"/data {'read-only' if self.mode == 'read-only' else 'full'} for {self.runners} runner(s)"
        bounds = []
        if kind in REQUEST_KINDS and self.share < 1:
            bounds.append(f"{self.share:.0%} of requests")
        if self.count is not None:
            unit = {"kill": "runner", "starts": "start"}.get(kind, "request")
            bounds.append(f"{self.count} {unit}{'s' if self.count != 1 else ''}")
        if self.seconds is not None:
            bounds.append(f"for {self.seconds:g} s")
        return text + (f" ({', '.join(bounds)})" if bounds else "")


def parse_spec(data: Mapping[str, Any]) -> FaultSpec:
    """A checked :class:`FaultSpec` from JSON-like data; :class:`UsageError` says what is wrong."""
    known = set(FaultSpec.__dataclass_fields__)
    unknown = set(data) - known
    if unknown:
        raise UsageError(
            f"unknown fault field(s): {', '.join(sorted(unknown))}", hint="known: " + ", ".join(sorted(known))
        )
    kind = str(data.get("kind", ""))
    if kind not in KINDS:
        raise UsageError(f"unknown fault kind {kind!r}", hint="kinds: " + ", ".join(KINDS))
    app = data.get("app")
    if not isinstance(app, str) or not app:
        raise UsageError("a fault needs the app it is for", hint="name the app (its name or deployed name)")
    try:
        spec = FaultSpec(
            kind=kind,
            app=app,
            count=_int(data, "count", 1),
            seconds=_float(data, "seconds", 0.001),
            share=_float(data, "share", 0.0) if data.get("share") is not None else 1.0,  # type: ignore[arg-type]
            status=_int(data, "status", 0),
            error_type=str(data["error_type"]) if data.get("error_type") is not None else None,
            delay=_float(data, "delay", 0.0),
            after_bytes=_int(data, "after_bytes", 0),
            runner=str(data["runner"]) if data.get("runner") else None,
            after=_float(data, "after", 0.0) or 0.0,
            mode=str(data["mode"]) if data.get("mode") is not None else None,
            runners=_int(data, "runners", 1) or 1,
        )
    except (TypeError, ValueError) as exc:
        raise UsageError(f"bad fault field: {exc}", hint="numbers for count, seconds, share, delay, after") from None
    return _check(spec)


def _int(data: Mapping[str, Any], name: str, least: int) -> int | None:
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | str) or int(value) != float(value):
        raise ValueError(f"{name} must be a whole number")
    number = int(value)
    if number < least:
        raise ValueError(f"{name} must be at least {least}")
    return number


def _float(data: Mapping[str, Any], name: str, least: float) -> float | None:
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a number")
    number = float(value)
    if not math.isfinite(number) or number < least:
        raise ValueError(f"{name} must be a number of at least {least:g}")
    return number


def _check(spec: FaultSpec) -> FaultSpec:
    kind = spec.kind
    if not 0 < spec.share <= 1:
        raise UsageError(f"share {spec.share:g} is not in (0, 1]", hint="0.5 hits every other request")
    if kind == "error":
        if spec.status not in ERROR_TYPES:
            raise UsageError(f"the gateway can answer 503, 504 or 429, not {spec.status}", hint="status=503")
        types = ERROR_TYPES[spec.status]
        error_type = spec.error_type if spec.error_type is not None else types[0]
        if error_type not in types:
            allowed = ", ".join(t for t in types if t) or "none (fal documents no error type for 429)"
            raise UsageError(
                f"{error_type} is not fal's error type for {spec.status}", hint=f"for {spec.status}: {allowed}"
            )
        spec = replace(spec, error_type=error_type)
    elif kind == "latency":
        if not spec.delay:
            raise UsageError("a latency fault needs delay (seconds added)", hint="delay=2")
    elif kind == "cut":
        if spec.after_bytes is None:
            spec = replace(spec, after_bytes=0)
    elif kind == "starts":
        mode = spec.mode or ("slow" if spec.delay else "fail")
        if mode not in START_MODES:
            raise UsageError(f"starts mode {mode!r} is not fail or slow", hint="mode=fail, or mode=slow with delay")
        if mode == "slow" and not spec.delay:
            raise UsageError("slow starts need delay (seconds added to each start)", hint="delay=30")
        spec = replace(spec, mode=mode, count=spec.count if spec.count is not None else 1)
    elif kind == "kill":
        spec = replace(spec, count=spec.count if spec.count is not None else 1)
        if spec.runner is not None and spec.count != 1:
            raise UsageError("a kill of a named runner kills that one runner", hint="drop count, or drop runner")
    elif kind == "data":
        if spec.mode not in DATA_MODES:
            raise UsageError(f"data mode {spec.mode!r} is not read-only or full", hint="mode=read-only or mode=full")
        if spec.count is not None:
            raise UsageError("a data fault is bounded by seconds (it lasts while its runners run)", hint="seconds=60")
        spec = replace(spec, seconds=spec.seconds if spec.seconds is not None else DEFAULT_WINDOW)
    if kind in REQUEST_KINDS and spec.count is None and spec.seconds is None:
        spec = replace(spec, seconds=DEFAULT_WINDOW)
    return spec


@dataclass
class Fault:
    """A fault in effect (or ended): its spec, when it started and ends, what it hit."""

    id: str
    spec: FaultSpec
    started_at: float
    ends_at: float | None  # the window's end (clock time), None for a count-only fault
    applied: int = 0  # requests, starts or kills it hit
    seen: int = 0  # requests it was asked about (for share)
    ended: str | None = None  # why it ended: count | window | cleared | runner_gone | shutdown
    targets: list[str] = field(default_factory=list)  # runners it applies to (data, kill)

    @property
    def app(self) -> str:
        return self.spec.app

    @property
    def kind(self) -> str:
        return self.spec.kind

    def row(self, now: float) -> dict[str, Any]:
        """For ``falemu chaos list`` and ``falemu ps``."""
        left = None if self.ends_at is None or self.ended else max(0.0, self.ends_at - now)
        remaining = None if self.spec.count is None else max(0, self.spec.count - self.applied)
        return {
            "id": self.id,
            "kind": self.kind,
            "app": self.app,
            "description": self.spec.describe(),
            "applied": self.applied,
            "remaining": remaining,
            "seconds_left": None if left is None else round(left, 1),
            "ended": self.ended,
            "targets": list(self.targets),
            "spec": self.spec.to_dict(),
        }


@dataclass(frozen=True)
class RequestPlan:
    """What the faults do to one request (the gateway applies it)."""

    error: Fault | None = None  # answer this fault's status instead of forwarding
    delay: float = 0.0  # seconds to wait before forwarding
    cut_after: int | None = None  # cut the runner connection after this many body bytes
    hit: tuple[Fault, ...] = ()  # the faults applied to it (each once)
    ended: tuple[Fault, ...] = ()  # faults whose count ran out with this request

    @property
    def answer(self) -> tuple[int, str | None, str] | None:
        """Status, fal error type and detail the gateway answers instead of forwarding; None to forward."""
        if self.error is None:
            return None
        status = self.error.spec.status or 503
        return (
            status,
            self.error.spec.error_type,
            f"{DETAILS.get(status, 'Error')} (fault {self.error.id}, falemu chaos)",
        )


class RequestFaults(Protocol):
    """The gateway's side of falemu.chaos (``Gateway.faults``, None while no request fault is in effect)."""

    def intercepts(self, alias: str) -> bool:
        """A request fault of this app is in effect."""
        ...

    def on_request(self, alias: str, request_id: str) -> RequestPlan | None:
        """What the faults do to this request (call once per request, or per attempt of a queued one)."""
        ...


@dataclass(frozen=True)
class StartPlan:
    fail: Fault | None = None
    delay: float = 0.0
    data_mode: str | None = None  # read-only | full
    hit: tuple[Fault, ...] = ()
    ended: tuple[Fault, ...] = ()


class FaultSchedule:
    """The faults of one emulator and the decisions they make (see the module docstring)."""

    def __init__(self) -> None:
        self.faults: dict[str, Fault] = {}
        self._next = 1

    def add(self, spec: FaultSpec, now: float) -> Fault:
        fault = Fault(
            id=f"f{self._next}",
            spec=spec,
            started_at=now,
            ends_at=now + spec.seconds if spec.seconds is not None else None,
        )
        self._next += 1
        self.faults[fault.id] = fault
        return fault

    def active(self, app: str | None = None, kinds: frozenset[str] | None = None) -> list[Fault]:
        return [
            f
            for f in self.faults.values()
            if f.ended is None and (app is None or f.app == app) and (kinds is None or f.kind in kinds)
        ]

    def end(self, fault_id: str, reason: str) -> Fault | None:
        """End one fault now; None when it is unknown or already over."""
        fault = self.faults.get(fault_id)
        if fault is None or fault.ended is not None:
            return None
        fault.ended = reason
        return fault

    def expire(self, now: float) -> list[Fault]:
        """End the faults whose window is over; returns them."""
        over = [f for f in self.active() if f.ends_at is not None and f.ends_at <= now]
        for fault in over:
            fault.ended = "window"
        return over

    def next_deadline(self) -> float | None:
        ends = [f.ends_at for f in self.active() if f.ends_at is not None]
        return min(ends) if ends else None

    def forget_ended(self, keep: int = 100) -> None:
        """Drop the oldest ended faults beyond ``keep``."""
        ended = [fid for fid, f in self.faults.items() if f.ended is not None]
        for fid in ended[: max(0, len(ended) - keep)]:
            del self.faults[fid]

    # -- decisions -------------------------------------------------------------------------------------

    def _hits(self, fault: Fault) -> bool:
        """Whether the next request is one of the fault's share (exactly ``share`` of them, spread evenly)."""
        fault.seen += 1
        share = fault.spec.share
        return share >= 1 or math.floor(fault.seen * share) > math.floor((fault.seen - 1) * share)

    def use(self, fault: Fault) -> list[Fault]:
        """Count one hit of ``fault``; returns it when that was its last."""
        ended: list[Fault] = []
        self._use(fault, ended)
        return ended

    def _use(self, fault: Fault, ended: list[Fault]) -> None:
        fault.applied += 1
        if fault.spec.count is not None and fault.applied >= fault.spec.count:
            fault.ended = "count"
            ended.append(fault)

    def for_request(self, app: str, now: float) -> RequestPlan | None:
        """The request faults that hit the next request of ``app``; None when none does."""
        ended = self.expire(now)
        candidates = self.active(app, REQUEST_KINDS)
        if not candidates and not ended:
            return None
        hit: list[Fault] = []
        error: Fault | None = None
        delay = 0.0
        cut: int | None = None
        for fault in candidates:
            if fault.kind == "error" and error is not None:
                continue  # one answer per request; the next error fault keeps its share for later
            if not self._hits(fault):
                continue
            hit.append(fault)
            self._use(fault, ended)
            if fault.kind == "error":
                error = fault
            elif fault.kind == "latency":
                delay += fault.spec.delay or 0.0
            elif cut is None:
                cut = fault.spec.after_bytes or 0
        if error is not None:
            delay, cut = 0.0, None
        return RequestPlan(error=error, delay=delay, cut_after=cut, hit=tuple(hit), ended=tuple(ended))

    def for_start(self, app: str, runner: str, now: float) -> StartPlan | None:
        """What happens to the next runner start of ``app`` (its id ``runner``)."""
        ended = self.expire(now)
        hit: list[Fault] = []
        fail: Fault | None = None
        delay = 0.0
        data_mode: str | None = None
        for fault in self.active(app, frozenset({"starts", "data"})):
            if fault.kind == "data":
                if len(fault.targets) >= fault.spec.runners or data_mode is not None:
                    continue
                fault.targets.append(runner)
                fault.applied += 1
                data_mode = fault.spec.mode
                hit.append(fault)
                continue
            if fail is not None or delay:
                continue
            hit.append(fault)
            self._use(fault, ended)
            if fault.spec.mode == "fail":
                fail = fault
            else:
                delay = fault.spec.delay or 0.0
        if not hit and not ended:
            return None
        return StartPlan(fail=fail, delay=delay, data_mode=data_mode, hit=tuple(hit), ended=tuple(ended))

    def for_lease(self, app: str, runner: str, now: float) -> tuple[Fault | None, list[Fault]]:
        """A kill fault armed for "the runner that takes the next request" of ``app``, when there is one."""
        ended = self.expire(now)
        for fault in self.active(app, frozenset({"kill"})):
            if fault.spec.runner is None:
                fault.targets.append(runner)
                self._use(fault, ended)
                return fault, ended
        return None, ended
