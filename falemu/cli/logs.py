"""``falemu logs [APP] [-f]``: runner log lines of a running ``falemu up``, prefixed by runner id."""

from __future__ import annotations

import json
from pathlib import Path

import click

from falemu.cli.options import examples, project_option, running_instances
from falemu.errors import UsageError


@click.command(
    "logs",
    epilog=examples(
        ("falemu logs", "the last 200 lines of every app"),
        ("falemu logs greeter -f", "follow one app until Ctrl-C"),
        ("falemu logs --tail 0 -f --json", "only new lines, as JSON"),
    ),
)
@click.argument("app", required=False)
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines until Ctrl-C.")
@click.option(
    "--tail", type=click.IntRange(min=0), default=200, show_default=True, help="Lines from before now to show."
)
@click.option("--json", "json_lines", is_flag=True, help="Print JSON lines.")
@project_option
def logs(app: str | None, follow: bool, tail: int, json_lines: bool, project: Path | None) -> None:
    """Show the log lines of APP's runners (every app's when none is named)."""
    import httpx

    from falemu import state
    from falemu.cli.output import Renderer

    running = running_instances(project)
    if app is not None:
        running = [i for i in running if app in i.apps] or running
    if not running:
        raise UsageError("no falemu up is running", hint="start one with `falemu up` in the project folder")
    instance = running[-1]
    params = {"tail": str(tail), "follow": "1" if follow else "0"}
    if app is not None:
        params["app"] = app
    renderer = Renderer(json_lines=json_lines)
    try:
        with httpx.stream(
            "GET",
            f"{instance.url}/_falemu/logs",
            params=params,
            headers={state.ADMIN_HEADER: instance.admin_token},
            verify=instance.verify,
            timeout=httpx.Timeout(5, read=None),
        ) as response:
            if response.status_code == 404:
                raise UsageError(
                    f"app {app} is not served by the falemu up at {instance.url}",
                    hint=f"its apps: {', '.join(instance.apps)}",
                )
            if response.status_code != 200:
                raise UsageError(f"falemu up at {instance.url} answered {response.status_code}")
            for line in response.iter_lines():
                if line:
                    renderer.log_line(json.loads(line))
        if follow:
            renderer.note(f"the falemu up at {instance.url} stopped")
    except KeyboardInterrupt:
        return
    except httpx.HTTPError as exc:
        if follow:
            renderer.note(f"the falemu up at {instance.url} stopped")
            return
        raise UsageError(
            f"cannot read logs from {instance.url}: {exc}", hint="is that falemu up still running?"
        ) from None
    finally:
        renderer.flush()
