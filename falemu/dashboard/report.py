"""The report of ``falemu report`` and of the pytest plugin's ``--falemu-report``: one data shape
(:func:`falemu.dashboard.views.report`), rendered as text, JSON or a self-contained HTML page."""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from falemu.dashboard import views
from falemu.dashboard.views import Board


def combined(boards: Sequence[Board], *, since: float | None = None, until: float | None = None) -> dict[str, Any]:
    """One report over several emulators (a test session may start more than one)."""
    reports = [views.report(b, since=since, until=until) for b in boards]
    if not reports:
        return {"window": {"start": since or 0.0, "end": until or 0.0}, "currency": "USD", "apps": []}
    apps = [app for r in reports for app in r["apps"]]
    window = {"start": min(r["window"]["start"] for r in reports), "end": max(r["window"]["end"] for r in reports)}
    return {"window": window, "currency": reports[0]["currency"], "apps": apps}


def _s(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 1:
        return f"{value * 1000:.1f} ms"
    return f"{value:.2f} s"


def _money(value: float | None, currency: str) -> str:
    return "no price" if value is None else f"{value:.6f} {currency}"


def text(report: dict[str, Any]) -> str:
    """The report as ``falemu report`` prints it."""
    lines: list[str] = []
    currency = report.get("currency", "USD")
    if not report["apps"]:
        return "no apps\n"
    for app in report["apps"]:
        s = app["summary"]
        rate = "-" if s["success_rate"] is None else f"{s['success_rate'] * 100:.1f}%"
        lines.append(f"{app['app']} ({app['machine_type']})")
        lines.append(
            f"  requests {s['total']}: {s['success']} 2xx, {s['client_errors']} 4xx, {s['server_errors']} 5xx;"
            f" success {rate}; cold boots {s['cold_boots']}"
        )
        for name in ("startup", "execution", "end_to_end"):
            p = s[name]
            lines.append(
                f"  {name.replace('_', ' '):<11} p50 {_s(p['p50'])}  p75 {_s(p['p75'])}  p90 {_s(p['p90'])}"
                f"  p95 {_s(p['p95'])}"
            )
        for group in app["errors"][:10]:
            lines.append(
                f"  error {group['error_type']} {group['status']} {group['endpoint']}: {group['count']} request(s)"
            )
        cost = app["cost"]
        for machine in cost["machines"]:
            states = ", ".join(f"{k.lower()} {v:.1f} s" for k, v in machine["states"].items() if v > 0)
            lines.append(
                f"  billed {machine['billed_seconds']:.1f} runner-seconds on {machine['machine_type']}"
                f" ({states or 'none'}): {_money(machine['cost'], currency)}"
            )
        advisor = app["advisor"]
        lines.append(
            f"  keep_alive advisor ({advisor['requests']} requests, cold start {_s(advisor['cold_start_seconds'])}):"
        )
        lines.append("    keep_alive  min  mux  starts  cold  startup p95  idle s    cost")
        for v in advisor["variants"]:
            mark = "*" if v["current"] else " "
            cost_text = _money(v["cost"], currency) if v["cost"] is not None else f"{v['billed_seconds']:.1f} s"
            lines.append(
                f"   {mark}{v['keep_alive']:>9}  {v['min_concurrency']:>3}  {v['max_multiplexing']:>3}"
                f"  {v['runner_starts']:>6}  {v['cold_boots']:>4}  {_s(v['startup_p95']):>11}"
                f"  {v['idle_seconds']:>6.1f}  {cost_text}"
            )
        rec = advisor.get("recommendation")
        if rec:
            lines.append(
                f"  suggested: keep_alive {rec['keep_alive']}, min_concurrency {rec['min_concurrency']},"
                f" max_multiplexing {rec['max_multiplexing']}: {rec['reason']}"
            )
        lines.append("")
    return "\n".join(lines)


def to_html(report: dict[str, Any]) -> str:
    """A self-contained page (no scripts, no network) with the same figures."""
    body = html.escape(text(report))
    data = html.escape(json.dumps(report, indent=2, default=str))
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>falemu report</title>"
        "<style>body{font:14px system-ui;background:#0d0f14;color:#e6e8ee;margin:24px}"
        "pre{background:#151922;border:1px solid #262c3b;border-radius:8px;padding:12px;overflow:auto}"
        "summary{cursor:pointer;color:#a48bff}</style></head><body>"
        f"<h1>falemu report</h1><pre>{body}</pre>"
        f"<details><summary>the figures as JSON</summary><pre id='report-json'>{data}</pre></details>"
        "</body></html>"
    )


def write(path: Path, report: dict[str, Any]) -> None:
    """JSON for ``*.json``, else HTML."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".json":
        path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    else:
        path.write_text(to_html(report))
