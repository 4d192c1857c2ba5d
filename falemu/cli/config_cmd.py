"""``falemu config``: check and show ``[tool.fal.apps.*]`` as fal reads it, and falemu's own settings."""

from __future__ import annotations

import json
from pathlib import Path, PurePath
from typing import Any

import click

from falemu.cli.options import examples, project_option


def _load(project: Path | None) -> Any:
    from falemu.config import load_project

    return load_project(project)


def _format(value: Any) -> str:
    from falemu.config.report import jsonable

    if value is None:
        return "-"
    if isinstance(value, str | PurePath):
        return str(value)
    return json.dumps(jsonable(value))


@click.group(
    "config",
    epilog=examples(
        ("falemu config validate", "what `fal deploy` would say about every app"),
        ("falemu config show greeter", "every value of greeter, with where it comes from"),
        ("falemu config show app.py::MyApp", "a fal.App class: class, pyproject or default for each value"),
        ("falemu config show-settings", "falemu's own settings ([tool.falemu], FALEMU_*)"),
    ),
)
def config() -> None:
    """Validate and show [tool.fal.apps.*] as fal reads it."""


@config.command("validate")
@project_option
@click.argument("apps", nargs=-1)
@click.pass_context
def validate(ctx: click.Context, project: Path | None, apps: tuple[str, ...]) -> None:
    """Check APPS (every app when none is named) with fal's rules.

    Prints one line per valid app with its warnings; for an invalid app prints fal's own message and
    exits 2.
    """
    from falemu.config import get_app, project_settings
    from falemu.errors import ConfigError

    loaded = _load(project)
    project_settings(loaded)  # [tool.falemu] too: a typo there stops `falemu up` as well
    names = apps or loaded.app_names
    if not names:
        raise ConfigError(
            f"No apps in {loaded.pyproject}",
            hint="declare [tool.fal.apps.<name>] there; fal reads the pyproject.toml of the first folder, "
            "from the current one upward, that has .git or a [tool.fal] table",
        )
    if len(names) == 1:  # one app: its error goes through the CLI boundary unchanged
        _report_ok(get_app(loaded, names[0]))
        return
    failed = 0
    for name in names:
        try:
            app = get_app(loaded, name)
        except ConfigError as exc:
            failed += 1
            click.echo(f"invalid {name}", err=False)
            click.echo(f"error: {exc.message}", err=True)
            if exc.hint:
                click.echo(f"hint: {exc.hint}", err=True)
            continue
        _report_ok(app)
    if failed:
        ctx.exit(2)


def _report_ok(app: Any) -> None:
    image = ""
    if app.image is not None:
        image = f", image {app.image.dockerfile or app.image.image}"
    port = f", port {app.exposed_port}" if app.exposed_port is not None else ""
    click.echo(f"ok {app.name} ({app.shape.value}{port}{image})")
    for warning in app.warnings:
        click.echo(f"  warning: {warning}")


@config.command("show")
@project_option
@click.argument("app")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def show(project: Path | None, app: str, as_json: bool) -> None:
    """Show APP's resolved config: every value with its source.

    Sources: pyproject, class (read off a fal.App class by fal's loader), default or derived. APP is an
    app name of the pyproject or a fal.App ref, path/to/app.py::ClassName (loaded as `fal run` loads it:
    the class alone). fal.Apps need the fal SDK installed (pip install 'falemu[fal]').
    """
    from falemu.cli.options import load_for
    from falemu.config.falapp import resolve
    from falemu.config.report import app_entries, app_report

    loaded = load_for(project, [app])
    resolved = resolve(loaded, app)
    if as_json:
        click.echo(json.dumps(app_report(resolved), indent=2))
        return
    if resolved.fal_app is not None and resolved.name == app and resolved.raw == {}:
        click.echo(f"fal.App {resolved.fal_app.file}::{resolved.fal_app.class_name} (as `fal run {app}` loads it)")
    else:
        click.echo(f"[tool.fal.apps.{resolved.name}] in {resolved.pyproject}")
    entries = app_entries(resolved)
    width = max(len(e.key) for e in entries)
    for entry in entries:
        click.echo(f"  {entry.key.ljust(width)}  {_format(entry.value)}  ({entry.source})")
    for warning in resolved.warnings:
        click.echo(f"warning: {warning}")


@config.command("show-settings")
@project_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def show_settings(project: Path | None, as_json: bool) -> None:
    """Show falemu's own settings: defaults < [tool.falemu] < FALEMU_* < flags, each with its source."""
    from falemu.config import load_project, project_settings
    from falemu.config.report import settings_entries, settings_report
    from falemu.errors import ConfigError

    try:
        loaded = load_project(project)
    except ConfigError as exc:
        if exc.message != "No pyproject.toml file found.":
            raise
        loaded = None
    settings = project_settings(loaded)
    pyproject = loaded.pyproject if loaded is not None else None
    if as_json:
        click.echo(json.dumps(settings_report(settings, pyproject), indent=2))
        return
    click.echo(f"falemu settings ([tool.falemu] in {pyproject or 'no pyproject.toml'})")
    entries = settings_entries(settings)
    width = max(len(e.key) for e in entries)
    for entry in entries:
        click.echo(f"  {entry.key.ljust(width)}  {_format(entry.value)}  ({entry.source})")
    if settings.sources.get("tls", "default") != "default":
        from falemu.cli.up import TLS_NOT_NEEDED

        click.echo(f"note: {TLS_NOT_NEEDED}")
