"""``falemu chaos``: inject faults into a running ``falemu up`` from another terminal.

Each subcommand posts one fault (see :mod:`falemu.chaos.faults`) to the running ``falemu up``'s
``/_falemu/chaos`` admin route and prints its id; ``list`` shows them, ``clear`` ends them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import click

from falemu.cli.options import examples, project_option, running_instances
from falemu.errors import UsageError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m)?\s*$")


class Seconds(click.ParamType):  # type: ignore[type-arg]
    """A duration: ``2``, ``2s``, ``500ms``, ``1.5m``."""

    name = "seconds"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, int | float):
            return float(value)
        match = _DURATION.match(str(value))
        if match is None:
            self.fail(f"{value!r} is not a duration (for example 2, 2s, 500ms, 1m)", param, ctx)
        number = float(match[1])
        return number / 1000 if match[2] == "ms" else number * 60 if match[2] == "m" else number


SECONDS = Seconds()
BOUNDS_HELP = "Without --count or --seconds a request fault lasts 60 s."


def _bounds(fn: Any) -> Any:
    fn = click.option("--seconds", "seconds", type=SECONDS, default=None, help="End it after this long (2s, 1m).")(fn)
    fn = click.option("--count", type=click.IntRange(min=1), default=None, help="End it after this many hits.")(fn)
    return fn


def _share(fn: Any) -> Any:
    return click.option(
        "--share",
        type=click.FloatRange(0, 1, min_open=True),
        default=1.0,
        show_default=True,
        help="The part of the requests it hits (0.5: every other one).",
    )(fn)


def _json_flag(fn: Any) -> Any:
    return click.option("--json", "json_out", is_flag=True, help="Print JSON.")(fn)


def _instance(project: Path | None, app: str | None) -> Any:
    running = running_instances(project)
    if app is not None:
        running = [i for i in running if app in i.apps] or running
    if not running:
        raise UsageError("no falemu up is running", hint="start one with `falemu up` in the project folder")
    return running[-1]


def _call(project: Path | None, app: str | None, path: str, payload: dict[str, Any] | None = None) -> Any:
    import httpx

    from falemu import state

    instance = _instance(project, app)
    url = f"{instance.url}/_falemu/chaos{path}"
    headers = {state.ADMIN_HEADER: instance.admin_token}
    try:
        if payload is None:
            response = httpx.get(url, headers=headers, verify=instance.verify, timeout=10)
        else:
            response = httpx.post(url, json=payload, headers=headers, verify=instance.verify, timeout=30)
    except httpx.HTTPError as exc:
        raise UsageError(f"cannot reach the falemu up at {instance.url}: {exc}", hint="is it still running?") from None
    data = response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
    if response.status_code == 400:
        raise UsageError(str(data.get("detail")), hint=data.get("hint"))
    if response.status_code != 200:
        raise UsageError(
            f"the falemu up at {instance.url} answered {response.status_code}: {data.get('detail', '')}",
            hint="a falemu up older than this falemu has no chaos routes; restart it",
        )
    return data


def _add(ctx: click.Context, spec: dict[str, Any]) -> None:
    obj = ctx.obj or {}
    payload = {k: v for k, v in spec.items() if v is not None}
    data = _call(obj.get("project"), payload.get("app"), "", payload)
    fault = data["fault"]
    if obj.get("json"):
        click.echo(json.dumps(fault))
    else:
        click.echo(f"{fault['id']}: {fault['description']} ({fault['app']})")


EXAMPLES = examples(
    ("falemu chaos kill greeter", "kill the runner that takes greeter's next request"),
    ("falemu chaos kill greeter --runner greeter-1a2b", "kill that runner now"),
    ("falemu chaos starts greeter --fail --count 3", "the next 3 runner starts fail (FAILURE_DELAY follows)"),
    ("falemu chaos error greeter --status 503 --share 0.5 --seconds 30", "every other request gets fal's 503"),
    ("falemu chaos latency greeter --delay 2s --count 10", "10 requests reach their runner 2 s late"),
    ("falemu chaos cut greeter --after-bytes 100", "answers cut after 100 bytes"),
    ("falemu chaos data greeter --read-only --seconds 1m", "a runner whose /data is read-only"),
    ("falemu chaos list", "faults in effect"),
    ("falemu chaos clear", "end them all"),
)


@click.group("chaos", epilog=EXAMPLES)
@project_option
@click.option("--json", "json_out", is_flag=True, help="Print JSON.")
@click.pass_context
def chaos(ctx: click.Context, project: Path | None, json_out: bool) -> None:
    """Inject faults into a running `falemu up`, each bounded in time or count.

    falemu then behaves as fal does: a killed runner's queued request is retried on a new runner and
    its sync caller gets 503 runner_disconnected; queued requests are retried after 503 and 504
    (x-fal-no-retry respected); failed starts lead to FAILURE_DELAY. Faults show in the live view,
    `falemu ps` and the events.
    """
    ctx.ensure_object(dict)
    ctx.obj["project"] = project
    ctx.obj["json"] = json_out


@chaos.command("kill")
@click.argument("app")
@click.option("--runner", default=None, help="Kill this runner now (default: the runner of the next request).")
@click.option(
    "--after", type=SECONDS, default=0.0, help="Seconds after the next request reached its runner (mid-request)."
)
@click.option("--count", type=click.IntRange(min=1), default=None, help="Kill the runners of this many requests.")
@click.pass_context
def kill(ctx: click.Context, app: str, runner: str | None, after: float, count: int | None) -> None:
    """Kill a runner of APP (SIGKILL), idle or in the middle of a request."""
    _add(ctx, {"kind": "kill", "app": app, "runner": runner, "after": after, "count": count})


@chaos.command("starts")
@click.argument("app")
@click.option("--fail", "mode", flag_value="fail", help="The starts fail, as a setup() that raises.")
@click.option("--slow", "delay", type=SECONDS, default=None, help="Each start takes this much longer.")
@click.option("--count", type=click.IntRange(min=1), default=1, show_default=True, help="How many starts.")
@click.pass_context
def starts(ctx: click.Context, app: str, mode: str | None, delay: float | None, count: int) -> None:
    """Fail or slow down the next runner starts of APP (past startup_timeout a slow start fails)."""
    if (mode is None) == (delay is None):
        raise UsageError("say --fail or --slow DURATION", hint="falemu chaos starts APP --fail --count 3")
    _add(ctx, {"kind": "starts", "app": app, "mode": mode or "slow", "delay": delay, "count": count})


@chaos.command("error", epilog=BOUNDS_HELP)
@click.argument("app")
@click.option("--status", type=click.Choice(["503", "504", "429"]), default="503", show_default=True)
@click.option(
    "--type", "error_type", default=None, help="fal's error type (default: runner_scheduling_failure for 503)."
)
@_share
@_bounds
@click.pass_context
def error(
    ctx: click.Context,
    app: str,
    status: str,
    error_type: str | None,
    share: float,
    count: int | None,
    seconds: float | None,
) -> None:
    """The gateway answers APP's requests with fal's STATUS error instead of a runner's answer."""
    spec = {"kind": "error", "app": app, "status": int(status), "error_type": error_type, "share": share}
    _add(ctx, {**spec, "count": count, "seconds": seconds})


@chaos.command("latency", epilog=BOUNDS_HELP)
@click.argument("app")
@click.option("--delay", type=SECONDS, required=True, help="Added before a request reaches its runner (2s, 500ms).")
@_share
@_bounds
@click.pass_context
def latency(ctx: click.Context, app: str, delay: float, share: float, count: int | None, seconds: float | None) -> None:
    """Add latency to APP's requests."""
    spec = {"kind": "latency", "app": app, "delay": delay, "share": share, "count": count, "seconds": seconds}
    _add(ctx, spec)


@chaos.command("cut", epilog=BOUNDS_HELP)
@click.argument("app")
@click.option("--after-bytes", type=click.IntRange(min=0), default=0, show_default=True, help="Body bytes passed.")
@_share
@_bounds
@click.pass_context
def cut(ctx: click.Context, app: str, after_bytes: int, share: float, count: int | None, seconds: float | None) -> None:
    """Cut the runner connection part-way through APP's responses."""
    spec = {"kind": "cut", "app": app, "after_bytes": after_bytes, "share": share}
    _add(ctx, {**spec, "count": count, "seconds": seconds})


@chaos.command("data")
@click.argument("app")
@click.option("--read-only", "mode", flag_value="read-only", help="/data is mounted read-only.")
@click.option("--full", "mode", flag_value="full", help="/data has no room left (an empty file system).")
@click.option("--runners", type=click.IntRange(min=1), default=1, show_default=True, help="How many runners.")
@click.option("--seconds", type=SECONDS, default=None, help="How long (default 60 s); then the runners are replaced.")
@click.pass_context
def data(ctx: click.Context, app: str, mode: str | None, runners: int, seconds: float | None) -> None:
    """Give runners of APP a read-only or full /data (falemu replaces that many runners now)."""
    if mode is None:
        raise UsageError("say --read-only or --full", hint="falemu chaos data APP --read-only")
    _add(ctx, {"kind": "data", "app": app, "mode": mode, "runners": runners, "seconds": seconds})


@chaos.command("list")
@_json_flag
@click.pass_context
def list_faults(ctx: click.Context, json_out: bool) -> None:
    """The faults of the running falemu up (in effect, and recently ended)."""
    obj = ctx.obj or {}
    faults = _call(obj.get("project"), None, "")["faults"]
    if json_out or obj.get("json"):
        click.echo(json.dumps(faults))
        return
    if not faults:
        click.echo("no faults")
        return
    for fault in faults:
        state = f"ended ({fault['ended']})" if fault["ended"] else "in effect"
        click.echo(f"{fault['id']}  {fault['app']}  {state}  hit {fault['applied']}  {fault['description']}")


@chaos.command("clear")
@click.argument("fault_id", required=False)
@click.option("--app", default=None, help="Only this app's faults.")
@click.pass_context
def clear(ctx: click.Context, fault_id: str | None, app: str | None) -> None:
    """End a fault (FAULT_ID), an app's faults (--app) or all of them."""
    obj = ctx.obj or {}
    cleared = _call(obj.get("project"), app, "/clear", {"id": fault_id, "app": app})["cleared"]
    if obj.get("json"):
        click.echo(json.dumps(cleared))
        return
    click.echo(f"cleared {len(cleared)} fault(s)" + (": " + ", ".join(f["id"] for f in cleared) if cleared else ""))
