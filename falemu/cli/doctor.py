"""``falemu doctor``: the Docker engine, GPU support, architectures, the data folder and the gateway port."""

from __future__ import annotations

from pathlib import Path

import click

from falemu.cli.options import project_option

MARKS = {"ok": "ok  ", "warn": "warn", "fail": "FAIL"}


@click.command("doctor")
@project_option
@click.option("--image", default=None, help="Image to probe GPU support with (default: any local image).")
@click.pass_context
def doctor(ctx: click.Context, project: Path | None, image: str | None) -> None:
    """Report whether this machine can run fal apps locally; exits 1 when a check fails."""
    from falemu.config import load_project, project_settings
    from falemu.errors import ConfigError
    from falemu.runtime.doctor import run_checks

    try:
        loaded = load_project(project)
    except ConfigError:
        loaded = None  # doctor also runs outside a project: falemu's defaults then
    settings = project_settings(loaded)
    failed = False
    for check in run_checks(settings, gpu_image=image):
        click.echo(f"{MARKS[check.status]}  {check.name:<7} {check.detail}")
        if check.hint and check.status != "ok":
            click.echo(f"      {'':<7} hint: {check.hint}")
        failed = failed or check.status == "fail"
    if failed:
        ctx.exit(1)
