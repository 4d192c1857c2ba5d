"""What the dashboard shows, as plain data: shared by its JSON API, ``falemu report`` and the pytest plugin.

Each function takes a :class:`Board` (the emulator's apps and pools, the history, the prices) and
returns JSON-ready dicts. Nothing here speaks HTTP.
"""

from __future__ import annotations

import base64
import json
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from falemu.config.model import AppConfig
from falemu.config.report import app_entries, jsonable
from falemu.dashboard import advisor as adv
from falemu.dashboard import analytics
from falemu.dashboard.history import History
from falemu.dashboard.pricing import Prices
from falemu.dashboard.records import Body, RequestRecord, RunnerRecord
from falemu.scaling.policy import SERVING_STATES

# fal's cold-start stages as falemu's runtimes time them (build or pull, create, start, setup, ready).
STAGES = (
    ("build", "build or pull"),
    ("create", "create"),
    ("start", "start"),
    ("port_open", "setup"),
    ("http_ready", "ready"),
)
NO_OPENAPI = (
    "This app does not serve /openapi.json. fal's guide asks Direct Server Mode apps to serve it "
    '"to unlock the full fal dashboard experience, including the Playground, analytics, and error tracking": '
    "without it fal shows no Playground. Serve the document at /openapi.json (FastAPI does by default)."
)

NO_RUNNER_YET = (
    "No runner of this app has been ready yet to ask for its /openapi.json (still starting, or it never "
    "started). The Playground shows once a runner answers: call the app, or see its runners and logs."
)


def openapi_missing(board: Board, alias: str) -> str:
    """Why the Playground has no document for ``alias``: the app serves none, or no runner could be asked."""
    pool = board.pools(alias)
    serving = pool is not None and any(r.state in SERVING_STATES for r in pool.runners())
    return NO_OPENAPI if serving else NO_RUNNER_YET


class PoolView(Protocol):
    """What the dashboard reads of an app's runner pool (the scaling controller)."""

    @property
    def waiting(self) -> int: ...

    def runners(self) -> Sequence[Any]: ...


@dataclass
class Board:
    """The dashboard's sources: apps by alias, their pools, the history and the price table."""

    apps: Mapping[str, AppConfig]
    pools: Callable[[str], PoolView | None]
    history: History
    prices: Prices
    owner: str = "local"
    base_url: str = ""
    openapi: Callable[[str], dict[str, Any] | None] = field(default=lambda alias: None)

    def config(self, app: str) -> AppConfig | None:
        found = self.apps.get(app)
        if found is None:
            for config in self.apps.values():
                if config.name == app:
                    return config
        return found


# -- apps and runners ---------------------------------------------------------------------------------------


def app_summary(board: Board, config: AppConfig, now: float) -> dict[str, Any]:
    pool = board.pools(config.alias)
    live = list(pool.runners()) if pool is not None else []
    states: dict[str, int] = {}
    for r in live:
        states[r.state] = states.get(r.state, 0) + 1
    finished, success = board.history.recent(config.alias, now - 3600)  # counted as requests end: no scan
    return {
        "name": config.name,
        "alias": config.alias,
        "id": f"{board.owner}/{config.alias}",
        "shape": config.shape.value,
        "auth": config.effective_auth,
        "machine_type": config.machine_types[0] if config.machine_types else "XS",
        "machine_types": list(config.machine_types),
        "url": f"{board.base_url}/{board.owner}/{config.alias}",
        "queue_url": f"{board.base_url}/queue/{board.owner}/{config.alias}",
        "runners": states,
        "in_flight": sum(r.in_flight for r in live),
        "queue_depth": pool.waiting if pool is not None else 0,
        "requests_last_hour": finished,
        "success_rate_last_hour": (success / finished) if finished else None,
        "revision": int(getattr(pool, "revision", 1)),
        "faults": [f for f in board.history.faults(config.alias) if f["ended"] is None],
    }


def overview(board: Board) -> dict[str, Any]:
    now = time.time()
    history = board.history
    return {
        "owner": board.owner,
        "base_url": board.base_url,
        "apps": [app_summary(board, c, now) for c in board.apps.values()],
        "requests_kept": len(history),
        "body_bytes": history.body_bytes,
        "since": history.started_at,
        "version": history.version,
    }


def app_detail(board: Board, config: AppConfig) -> dict[str, Any]:
    now = time.time()
    entries = [
        {"key": e.key, "value": jsonable(e.value), "source": e.source}
        for e in app_entries(config)
        if e.value not in (None, (), [], {}) or e.source != "default"
    ]
    return {
        **app_summary(board, config, now),
        "config": entries,
        "scaling": jsonable(config.scaling),
        "warnings": list(config.warnings),
        "runners_detail": runner_rows(board, config.alias, now),
        "fault_history": board.history.faults(config.alias)[-50:],
        "activity": board.history.activity(config.alias),
    }


def runner_rows(board: Board, app: str | None, now: float | None = None) -> list[dict[str, Any]]:
    now = time.time() if now is None else now
    live: dict[str, Any] = {}
    for alias in [app] if app else list(board.apps):
        pool = board.pools(alias)
        if pool is not None:
            for info in pool.runners():
                live[info.id] = info
    rows = []
    for rec in board.history.runners(app):
        rows.append(runner_row(rec, live.get(rec.id), now))
    known = {r["id"] for r in rows}
    for rid, info in live.items():
        if rid not in known:
            rows.append(
                {
                    "id": rid,
                    "app": info.app,
                    "state": info.state,
                    "machine_type": "",
                    "in_flight": info.in_flight,
                    "served": info.served,
                    "created_at": None,
                    "stages": [],
                    "cold_start_seconds": None,
                    "states": {},
                    "billed_seconds": 0.0,
                    "history": [],
                    "error_type": None,
                    "error": "",
                    "stop_reason": "",
                    "log_lines": 0,
                    "revision": int(getattr(info, "revision", 1)),
                }
            )
    rows.sort(key=lambda r: (r["state"] == "TERMINATED", -(r["created_at"] or 0)))
    return rows


def runner_row(rec: RunnerRecord, info: Any, now: float) -> dict[str, Any]:
    seconds = analytics.state_seconds(rec.states, now)
    stages = [
        {"stage": key, "label": label, "seconds": round(rec.timeline[key], 6)}
        for key, label in STAGES
        if key in rec.timeline
    ]
    extra = [k for k in rec.timeline if k not in {s for s, _ in STAGES}]
    stages += [{"stage": k, "label": k, "seconds": round(rec.timeline[k], 6)} for k in extra]
    cold = (rec.ready_at - rec.created_at) if rec.ready_at is not None else None
    return {
        "id": rec.id,
        "app": rec.app,
        "state": info.state if info is not None else rec.state,
        "machine_type": rec.machine_type,
        "in_flight": info.in_flight if info is not None else 0,
        "served": info.served if info is not None else None,
        "created_at": rec.created_at,
        "stages": stages,
        "cold_start_seconds": None if cold is None else round(cold, 6),
        "started_for_request": rec.cold_start,
        "states": {k: round(v, 6) for k, v in seconds.items()},
        "billed_seconds": round(sum(seconds.get(s, 0.0) for s in analytics.BILLED_STATES), 6),
        "history": [{"state": s, "at": t} for s, t in rec.states],
        "error_type": rec.error_type,
        "error": rec.error,
        "stop_reason": rec.stop_reason,
        "log_lines": len(rec.logs),
        "revision": info.revision if info is not None else rec.revision,
    }


def log_rows(lines: Sequence[tuple[float, str, str]]) -> list[dict[str, Any]]:
    return [{"timestamp": ts, "stream": stream, "message": line} for ts, stream, line in lines]


# -- requests ----------------------------------------------------------------------------------------------


def body_view(body: Body | None) -> dict[str, Any] | None:
    """A kept body for display: JSON when it parses, else text, else base64."""
    if body is None:
        return None
    view: dict[str, Any] = {"content_type": body.content_type, "size": body.size, "truncated": body.truncated}
    data = body.data
    if not body.truncated and data:
        try:
            view["json"] = json.loads(data)
            return view
        except ValueError:
            pass
    try:
        view["text"] = data.decode("utf-8")
    except UnicodeDecodeError:
        view["base64"] = base64.b64encode(data).decode("ascii")
    return view


def request_row(rec: RequestRecord) -> dict[str, Any]:
    return {
        "id": rec.id,
        "app": rec.app,
        "endpoint": rec.endpoint,
        "method": rec.method,
        "mode": rec.mode,
        "state": rec.state,
        "status": rec.status,
        "error_type": rec.error_type,
        "received_at": rec.received_at,
        "seq": rec.seq,
        "queue_wait": _r(rec.queue_wait),
        "execution": _r(rec.execution),
        "total": _r(rec.total),
        "runner": rec.runner,
        "attempts": rec.attempts,
    }


def request_detail(board: Board, rec: RequestRecord) -> dict[str, Any]:
    replayable = rec.input is not None and not rec.input.truncated and rec.store_io
    return {
        **request_row(rec),
        "store_io": rec.store_io,
        "bodies_dropped": rec.bodies_dropped,
        "input": body_view(rec.input),
        "output": body_view(rec.output),
        "replayable": replayable,
        "logs": log_rows(board.history.request_logs(rec)),
    }


def request_list(
    board: Board,
    *,
    app: str | None = None,
    endpoint: str | None = None,
    status: str | None = None,
    mode: str | None = None,
    runner: str | None = None,
    search: str | None = None,
    before: float | None = None,
    older_than: int | None = None,
    limit: int = 100,
) -> dict[str, Any]:
    """Requests newest first: the first ``limit`` that match, and how many match in all.

    ``older_than`` pages through the history: only requests it took before the one with that ``seq``
    (pass the last row's). Without other filters a page costs its rows, not the history's size.
    """
    history = board.history
    if not (app or endpoint or status or mode or runner or search or before is not None):
        kept = len(history)
        if older_than is None:
            return {"requests": [request_row(r) for r in history.latest(limit)], "matched": kept, "kept": kept}
        page: list[dict[str, Any]] = []
        newer = 0
        for rec in history.newest():
            if rec.seq >= older_than:
                newer += 1
            elif len(page) < limit:
                page.append(request_row(rec))
            else:
                break
        return {"requests": page, "matched": kept - newer, "kept": kept}
    rows: list[dict[str, Any]] = []
    matched = 0
    for rec in history.newest():
        if app and rec.app != app:
            continue
        if endpoint and rec.endpoint != endpoint:
            continue
        if mode and rec.mode != mode:
            continue
        if runner and rec.runner != runner:
            continue
        if status and not _status_matches(rec, status):
            continue
        if search and search not in rec.id and search not in rec.endpoint:
            continue
        if before is not None and rec.received_at >= before:
            continue
        if older_than is not None and rec.seq >= older_than:
            continue
        matched += 1
        if len(rows) < limit:
            rows.append(request_row(rec))
    return {"requests": rows, "matched": matched, "kept": len(history)}


def _status_matches(rec: RequestRecord, wanted: str) -> bool:
    if wanted in ("2xx", "4xx", "5xx"):
        return analytics.status_class(rec.status) == wanted
    if wanted in ("queued", "running", "done"):
        return rec.state == wanted
    if wanted == "error":
        return rec.status is not None and rec.status >= 400
    return str(rec.status) == wanted


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


# -- analytics, errors, cost, advisor ----------------------------------------------------------------------------


def window(since: float | None, until: float | None, history: History) -> tuple[float, float]:
    end = until if until is not None else time.time()
    start = since if since is not None else min(history.started_at, end - 60)
    return start, max(end, start + 1)


def analytics_view(
    board: Board, *, app: str | None, endpoint: str | None, since: float | None, until: float | None
) -> dict[str, Any]:
    start, end = window(since, until, board.history)
    records = analytics.select(board.history.requests(), app=app, endpoint=endpoint, since=start, until=end)
    runners = [r for r in board.history.runners(app)]
    slow = sorted((r for r in records if r.total is not None), key=lambda r: -(r.total or 0))[:10]
    errors = [r for r in reversed(records) if r.status is not None and r.status >= 400][:10]
    return {
        "app": app,
        "endpoint": endpoint,
        "window": {"start": start, "end": end},
        "summary": analytics.summary(records),
        "series": analytics.buckets(records, start, end),
        "endpoints": analytics.by_endpoint(records),
        "runners": analytics.runner_times(runners, end, since=start),
        "recent_errors": [request_row(r) for r in errors],  # type: ignore[arg-type]
        "slowest": [request_row(r) for r in slow],  # type: ignore[arg-type]
    }


def errors_view(
    board: Board,
    *,
    app: str | None,
    endpoint: str | None,
    status: int | None,
    error_type: str | None,
    since: float | None,
    until: float | None,
) -> dict[str, Any]:
    start, end = window(since, until, board.history)
    records = analytics.select(board.history.requests(), app=app, endpoint=endpoint, since=start, until=end)
    failed = [
        r
        for r in records
        if r.status is not None
        and r.status >= 400
        and (status is None or r.status == status)
        and (error_type is None or (getattr(r, "error_type", None) or "") == error_type)
    ]
    groups = analytics.error_groups(failed)
    if error_type is not None:
        groups = [g for g in groups if g["error_type"] == error_type]
    failures = []
    for rec in board.history.runners(app):
        if rec.error_type and rec.created_at >= start:
            failures.append(
                {
                    "runner": rec.id,
                    "app": rec.app,
                    "error_type": rec.error_type,
                    "message": rec.error,
                    "at": rec.states[-1][1] if rec.states else rec.created_at,
                    "logs": log_rows(rec.log_lines()[-50:]),
                }
            )
    return {"window": {"start": start, "end": end}, "total": len(failed), "groups": groups, "runner_failures": failures}


def error_detail(board: Board, rec: RequestRecord) -> dict[str, Any]:
    """A failed request with its payload, its answer and its runner's log lines around it."""
    detail = request_detail(board, rec)
    detail["logs_around"] = log_rows(board.history.request_logs(rec, before=10.0, after=2.0))
    return detail


def cost_view(board: Board, *, app: str | None, since: float | None, until: float | None) -> dict[str, Any]:
    start, end = window(since, until, board.history)
    runners = board.history.runners(app)
    table = analytics.billable_seconds(runners, end, since=start)
    rows = []
    total = 0.0
    unknown: list[str] = []
    for machine, states in table.items():
        seconds = sum(states.values())
        hourly = board.prices.hourly(machine)
        cost = None if hourly is None else seconds * hourly / 3600
        if cost is None:
            unknown.append(machine)
        else:
            total += cost
        rows.append(
            {
                "machine_type": machine,
                "states": states,
                "billed_seconds": round(seconds, 6),
                "hourly": hourly,
                "cost": None if cost is None else round(cost, 6),
            }
        )
    return {
        "window": {"start": start, "end": end},
        "currency": board.prices.currency,
        "machines": rows,
        "total_cost": round(total, 6),
        "unpriced_machine_types": unknown,
        "prices": board.prices.to_dict(),
    }


def arrivals(board: Board, app: str, since: float | None = None, until: float | None = None) -> list[adv.Arrival]:
    out = []
    for r in board.history.requests():
        if r.app != app or not r.runner or r.execution is None or r.finished_at is None:
            continue
        if (since is not None and r.received_at < since) or (until is not None and r.received_at >= until):
            continue
        out.append(adv.Arrival(r.received_at, r.execution))
    return out


def cold_start_seconds(board: Board, app: str) -> float:
    """The median of the app's recorded cold starts (start ordered to ready), else a default."""
    seen = [r.ready_at - r.created_at for r in board.history.runners(app) if r.ready_at is not None]
    return float(statistics.median(seen)) if seen else adv.DEFAULT_COLD_START


def advisor_view(
    board: Board,
    config: AppConfig,
    *,
    keep_alive: Sequence[int] | None = None,
    min_concurrency: Sequence[int] | None = None,
    max_multiplexing: Sequence[int] | None = None,
    cold_start: float | None = None,
    since: float | None = None,
    until: float | None = None,
) -> dict[str, Any]:
    trace = arrivals(board, config.alias, since, until)
    grid = adv.variants(config.scaling, keep_alive, min_concurrency, max_multiplexing)
    machine = config.machine_types[0] if config.machine_types else "XS"
    price = board.prices.per_second(machine, config.gpu_count)
    result = adv.advise(
        config.scaling,
        trace,
        grid,
        cold_start=cold_start if cold_start is not None else cold_start_seconds(board, config.alias),
        price_per_second=price,
        start=since,
    )
    return {"app": config.alias, "machine_type": machine, "currency": board.prices.currency, **result}


def report(board: Board, *, since: float | None = None, until: float | None = None) -> dict[str, Any]:
    """Everything ``falemu report`` and the pytest plugin's ``--falemu-report`` show, per app."""
    start, end = window(since, until, board.history)
    apps = []
    for config in board.apps.values():
        a = analytics_view(board, app=config.alias, endpoint=None, since=start, until=end)
        apps.append(
            {
                "app": config.alias,
                "machine_type": config.machine_types[0] if config.machine_types else "XS",
                "scaling": jsonable(config.scaling),
                "summary": a["summary"],
                "endpoints": a["endpoints"],
                "runners": a["runners"],
                "errors": errors_view(
                    board, app=config.alias, endpoint=None, status=None, error_type=None, since=start, until=end
                )["groups"],
                "cost": cost_view(board, app=config.alias, since=start, until=end),
                "advisor": advisor_view(board, config, since=start, until=end),
            }
        )
    return {"window": {"start": start, "end": end}, "currency": board.prices.currency, "apps": apps}
