"""Pure aggregations over recorded requests and runners, as fal's analytics show them.

No I/O and no clock: callers pass the records and ``now``. The figures follow fal's Requests and
Runners views (docs: serverless observability, app analytics; Platform API ``/serverless/analytics``):

- counts split into 2xx, 4xx and 5xx (other codes, such as a caller's 499, count only in the total);
  success rate = 2xx / total;
- *startup* is gateway receipt to execution start (queue wait plus any cold start), *execution* is
  the runner's time, *end to end* is receipt to answer; percentiles p50/p75/p90/p95 by the
  nearest-rank rule: ``sorted(xs)[ceil(p / 100 * n) - 1]``; execution and end-to-end percentiles are
  over successful (2xx) requests only, startup over every request that reached a runner;
- a *cold boot* is a request whose startup took more than one second (``cold_boot_count``);
- buckets over time are chosen from the range as fal's API does (minute below 2 h, hour below 2 days,
  day below 64 days, week below 183 days, else month), with one local addition: ranges under 10
  minutes use 10-second buckets;
- runner time per state comes from each runner's state changes; billed states are fal's (SETUP, IDLE,
  RUNNING, DRAINING, TERMINATING).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

PERCENTILES = (50, 75, 90, 95)
COLD_BOOT_SECONDS = 1.0
BILLED_STATES = ("SETUP", "IDLE", "RUNNING", "DRAINING", "TERMINATING")
TIME_STATES = ("PENDING", "SETUP", "IDLE", "RUNNING", "DRAINING", "TERMINATING")


class RequestLike(Protocol):
    @property
    def app(self) -> str: ...
    @property
    def endpoint(self) -> str: ...
    @property
    def received_at(self) -> float: ...
    @property
    def status(self) -> int | None: ...
    @property
    def queue_wait(self) -> float | None: ...
    @property
    def execution(self) -> float | None: ...
    @property
    def total(self) -> float | None: ...
    @property
    def runner(self) -> str: ...


class RunnerLike(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def app(self) -> str: ...
    @property
    def machine_type(self) -> str: ...
    @property
    def gpus(self) -> int: ...
    @property
    def states(self) -> list[tuple[str, float]]: ...


def percentile(values: Sequence[float], p: float) -> float | None:
    """The nearest-rank percentile of ``values`` (sorted or not); None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def percentiles(values: Sequence[float]) -> dict[str, float | None]:
    ordered = sorted(values)
    return {f"p{p}": percentile(ordered, p) for p in PERCENTILES}


def status_class(status: int | None) -> str:
    if status is None:
        return ""
    if 200 <= status < 300:
        return "2xx"
    if 400 <= status < 500:
        return "4xx"
    if status >= 500:
        return "5xx"
    return ""


def select(
    records: Iterable[RequestLike],
    *,
    app: str | None = None,
    endpoint: str | None = None,
    since: float | None = None,
    until: float | None = None,
) -> list[RequestLike]:
    """Finished requests of ``app``/``endpoint`` received in [since, until)."""
    out = []
    for r in records:
        if r.status is None or (app is not None and r.app != app) or (endpoint is not None and r.endpoint != endpoint):
            continue
        if (since is not None and r.received_at < since) or (until is not None and r.received_at >= until):
            continue
        out.append(r)
    return out


def summary(records: Sequence[RequestLike]) -> dict[str, Any]:
    """fal's KPI tiles for finished requests: counts, success rate, startup/execution/e2e percentiles."""
    counts: Counter[str] = Counter()
    startup: list[float] = []
    execution: list[float] = []
    e2e: list[float] = []
    cold = 0
    for r in records:
        kind = status_class(r.status)
        counts["total"] += 1
        if kind:
            counts[kind] += 1
        if r.runner and r.queue_wait is not None:
            startup.append(r.queue_wait)
            if r.queue_wait > COLD_BOOT_SECONDS:
                cold += 1
        if kind == "2xx":
            if r.execution is not None:
                execution.append(r.execution)
            if r.total is not None:
                e2e.append(r.total)
    total = counts["total"]
    return {
        "total": total,
        "success": counts["2xx"],
        "client_errors": counts["4xx"],
        "server_errors": counts["5xx"],
        "success_rate": (counts["2xx"] / total) if total else None,
        "cold_boots": cold,
        "startup": percentiles(startup),
        "execution": percentiles(execution),
        "end_to_end": percentiles(e2e),
    }


@dataclass(frozen=True)
class Granularity:
    name: str
    seconds: float


SECOND10 = Granularity("10s", 10)
MINUTE = Granularity("minute", 60)
HOUR = Granularity("hour", 3600)
DAY = Granularity("day", 86400)
WEEK = Granularity("week", 7 * 86400)
MONTH = Granularity("month", 30 * 86400)


def granularity(seconds: float) -> Granularity:
    """fal's automatic timeframe for a range (plus 10-second buckets under 10 minutes)."""
    if seconds < 600:
        return SECOND10
    if seconds < 2 * 3600:
        return MINUTE
    if seconds < 2 * 86400:
        return HOUR
    if seconds < 64 * 86400:
        return DAY
    if seconds < 183 * 86400:
        return WEEK
    return MONTH


def buckets(records: Sequence[RequestLike], since: float, until: float) -> dict[str, Any]:
    """Counts and latency percentiles per time bucket over [since, until)."""
    grain = granularity(until - since)
    step = grain.seconds
    first = math.floor(since / step) * step
    n = max(1, math.ceil((until - first) / step))
    rows: list[dict[str, Any]] = []
    by_bucket: defaultdict[int, list[RequestLike]] = defaultdict(list)
    for r in records:
        i = int((r.received_at - first) // step)
        if 0 <= i < n:
            by_bucket[i].append(r)
    for i in range(n):
        items = by_bucket.get(i, [])
        s = summary(items)
        rows.append(
            {
                "start": first + i * step,
                "total": s["total"],
                "success": s["success"],
                "client_errors": s["client_errors"],
                "server_errors": s["server_errors"],
                "cold_boots": s["cold_boots"],
                "startup_p50": s["startup"]["p50"],
                "startup_p90": s["startup"]["p90"],
                "execution_p50": s["execution"]["p50"],
                "execution_p75": s["execution"]["p75"],
                "execution_p90": s["execution"]["p90"],
                "end_to_end_p50": s["end_to_end"]["p50"],
            }
        )
    return {"granularity": grain.name, "seconds": step, "buckets": rows}


def by_endpoint(records: Sequence[RequestLike]) -> list[dict[str, Any]]:
    groups: defaultdict[tuple[str, str], list[RequestLike]] = defaultdict(list)
    for r in records:
        groups[(r.app, r.endpoint)].append(r)
    return [{"app": app, "endpoint": ep, **summary(items)} for (app, ep), items in sorted(groups.items())]


# -- runners -------------------------------------------------------------------------------------------


def state_seconds(states: Sequence[tuple[str, float]], now: float, since: float | None = None) -> dict[str, float]:
    """Seconds spent in each state from a runner's (state, since) changes, up to ``now``.

    The last state lasts until ``now`` unless it is TERMINATED or FAILURE_DELAY (the runner is gone).
    With ``since``, only time after it counts.
    """
    out: dict[str, float] = {}
    for i, (state, start) in enumerate(states):
        if state in ("TERMINATED", "FAILURE_DELAY"):
            continue
        end = states[i + 1][1] if i + 1 < len(states) else now
        if since is not None:
            start = max(start, since)
        if end > start:
            out[state] = out.get(state, 0.0) + (end - start)
    return out


def runner_times(runners: Iterable[RunnerLike], now: float, since: float | None = None) -> list[dict[str, Any]]:
    """Per runner: seconds per state (fal's Runners view: setup, running, idle...) and billed seconds."""
    rows = []
    for r in runners:
        seconds = state_seconds(r.states, now, since)
        rows.append(
            {
                "runner": r.id,
                "app": r.app,
                "machine_type": r.machine_type,
                "states": {s: round(seconds.get(s, 0.0), 6) for s in TIME_STATES},
                "billed_seconds": round(sum(seconds.get(s, 0.0) for s in BILLED_STATES), 6),
            }
        )
    return rows


def billable_seconds(runners: Iterable[RunnerLike], now: float, since: float | None = None) -> dict[str, Any]:
    """Billed runner-seconds by machine type and state (times the GPU count for multi-GPU runners)."""
    table: defaultdict[str, dict[str, float]] = defaultdict(lambda: {s: 0.0 for s in BILLED_STATES})
    for r in runners:
        factor = max(1, r.gpus)
        for state, secs in state_seconds(r.states, now, since).items():
            if state in BILLED_STATES:
                table[r.machine_type][state] += secs * factor
    return {mt: {s: round(v, 6) for s, v in states.items()} for mt, states in sorted(table.items())}


# -- errors --------------------------------------------------------------------------------------------


def error_groups(records: Sequence[RequestLike]) -> list[dict[str, Any]]:
    """Failed requests (4xx/5xx) grouped by error type, status and endpoint, most frequent first.

    A failure without an ``error_type`` is ``runner_server_error`` (5xx, as the queue reports it) or
    ``user_error`` (4xx: fal's ``user_error_count``)."""
    groups: defaultdict[tuple[str, int, str, str], list[RequestLike]] = defaultdict(list)
    for r in records:
        if r.status is None or r.status < 400:
            continue
        etype = getattr(r, "error_type", None) or ("runner_server_error" if r.status >= 500 else "user_error")
        groups[(etype, r.status, r.app, r.endpoint)].append(r)
    rows: list[dict[str, Any]] = []
    for (etype, status, app, endpoint), items in groups.items():
        items.sort(key=lambda x: x.received_at)
        rows.append(
            {
                "error_type": etype,
                "status": status,
                "app": app,
                "endpoint": endpoint,
                "count": len(items),
                "first": items[0].received_at,
                "last": items[-1].received_at,
                "request_ids": [getattr(x, "id", "") for x in items[-50:]][::-1],
            }
        )
    rows.sort(key=lambda g: (-g["count"], -g["last"]))
    return rows
