"""``GET /metrics``: fal's app metrics in Prometheus' text format.

fal's names (docs: serverless observability, exporting metrics), each labelled with ``app``:

- ``fal_app_runners{state, machine_type}``: runners by state (fal's exporter groups them into idle,
  running and pending; falemu gives every state it has, lower-cased);
- ``fal_app_queue_size``: requests waiting for a runner;
- ``fal_app_concurrent_requests``: requests in flight on runners;
- ``fal_app_requests_received`` and ``fal_app_requests_completed{method, status}``: over the last
  minute, as fal reports them;
- ``fal_app_request_latency``: a histogram of end-to-end seconds since falemu started.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from falemu.dashboard.counters import LATENCY_BUCKETS
from falemu.dashboard.views import Board

BASE_STATES = ("idle", "running", "pending", "setup")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _labels(**values: Any) -> str:
    inner = ",".join(f'{k}="{_escape(str(v))}"' for k, v in values.items())
    return "{" + inner + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def render(board: Board, now: float | None = None) -> str:
    now = time.time() if now is None else now
    lines: list[str] = []
    history = board.history

    def family(name: str, kind: str, help_text: str) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")

    family("fal_app_runners", "gauge", "Runners of the app by state and machine type.")
    for config in board.apps.values():
        pool = board.pools(config.alias)
        machine = config.machine_types[0] if config.machine_types else "XS"
        counts: Counter[str] = Counter()
        for r in pool.runners() if pool is not None else ():
            counts[r.state.lower()] += 1
        for state in (
            "idle",
            "running",
            "pending",
            "setup",
            *sorted(set(counts) - {"idle", "running", "pending", "setup"}),
        ):
            lines.append(
                f"fal_app_runners{_labels(app=config.alias, state=state, machine_type=machine)} {counts[state]}"
            )
    family("fal_app_queue_size", "gauge", "Requests waiting for a runner.")
    for config in board.apps.values():
        pool = board.pools(config.alias)
        lines.append(f"fal_app_queue_size{_labels(app=config.alias)} {pool.waiting if pool is not None else 0}")
    family("fal_app_concurrent_requests", "gauge", "Requests in flight on the app's runners.")
    for config in board.apps.values():
        pool = board.pools(config.alias)
        in_flight = sum(r.in_flight for r in pool.runners()) if pool is not None else 0
        lines.append(f"fal_app_concurrent_requests{_labels(app=config.alias)} {in_flight}")

    received: Counter[str] = Counter()
    completed: Counter[tuple[str, str, int]] = Counter()
    for rec in history.newest():
        if rec.received_at < now - 60:
            break
        received[rec.app] += 1
        if rec.status is not None:
            completed[(rec.app, rec.method, rec.status)] += 1
    family("fal_app_requests_received", "gauge", "Requests received in the last minute.")
    for config in board.apps.values():
        lines.append(f"fal_app_requests_received{_labels(app=config.alias)} {received[config.alias]}")
    family("fal_app_requests_completed", "gauge", "Requests completed in the last minute, by method and status.")
    for (app, method, status), n in sorted(completed.items()):
        lines.append(f"fal_app_requests_completed{_labels(app=app, method=method, status=status)} {n}")

    family("fal_app_request_latency", "histogram", "End-to-end request seconds since falemu started.")
    counters = history.counters
    for config in board.apps.values():
        buckets, seconds = counters.latency(config.alias)
        running = 0
        for le, n in zip((*LATENCY_BUCKETS, float("inf")), buckets, strict=True):
            running += n
            bound = "+Inf" if le == float("inf") else repr(le)
            lines.append(f"fal_app_request_latency_bucket{_labels(app=config.alias, le=bound)} {running}")
        lines.append(f"fal_app_request_latency_sum{_labels(app=config.alias)} {seconds!r}")
        lines.append(f"fal_app_request_latency_count{_labels(app=config.alias)} {running}")
    return "\n".join(lines) + "\n"
