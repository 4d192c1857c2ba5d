"""``falemu report``: analytics, errors, cost and the keep_alive advisor of a running ``falemu up``."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from falemu.cli.options import examples, project_option, running_instances

EXAMPLES = examples(
    ("falemu report", "every app of the running falemu up"),
    ("falemu report --json > report.json", "the same figures as JSON"),
    ("falemu report --last 600", "only requests of the last 10 minutes"),
)


@click.command("report", epilog=EXAMPLES)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the dashboard API's /report).")
@click.option("--app", "app_name", default=None, help="Only this app.")
@click.option("--last", type=float, default=None, help="Only requests of the last SECONDS.")
@click.option("--since", type=float, default=None, help="Window start, seconds since the epoch.")
@click.option("--until", type=float, default=None, help="Window end, seconds since the epoch (default: now).")
@project_option
def report(
    as_json: bool,
    app_name: str | None,
    last: float | None,
    since: float | None,
    until: float | None,
    project: Path | None,
) -> None:
    """Requests (counts, success rate, startup and execution percentiles, cold boots), errors, billed
    runner-seconds and cost, and what other keep_alive, min_concurrency and max_multiplexing values
    would have done with the recorded traffic.

    Reads the `falemu up` running for this project (the newest, when several run).
    """
    import httpx

    from falemu.dashboard.report import text
    from falemu.errors import UsageError

    running = running_instances(project)
    if not running:
        raise UsageError("no falemu up is running for this project", hint="start one with `falemu up`")
    instance = running[-1]
    if last is not None:
        since = (until or time.time()) - last
    params = {k: v for k, v in {"since": since, "until": until}.items() if v is not None}
    try:
        response = httpx.get(f"{instance.url}/_falemu/api/report", params=params, verify=instance.verify, timeout=120)
    except httpx.HTTPError as exc:
        raise UsageError(f"cannot reach the falemu up at {instance.url}: {exc}", hint="is it stopping?") from None
    if response.status_code == 404:
        raise UsageError(
            f"the falemu up at {instance.url} serves no dashboard", hint="start it without FALEMU_DASHBOARD=0"
        )
    if response.status_code != 200:
        raise UsageError(f"the falemu up at {instance.url} answered {response.status_code}: {response.text[:200]}")
    data = response.json()
    if app_name is not None:
        apps = [a for a in data["apps"] if a["app"] == app_name]
        if not apps:
            names = ", ".join(a["app"] for a in data["apps"]) or "none"
            raise UsageError(f"no app {app_name!r} in the running falemu up", hint=f"apps: {names}")
        data["apps"] = apps
    click.echo(json.dumps(data, indent=2) if as_json else text(data).rstrip("\n"))
