"""``falemu down``: remove every container falemu made (and nothing else)."""

from __future__ import annotations

from pathlib import Path

import click

from falemu.cli.options import examples, project_option


@click.command(
    "down",
    epilog=examples(
        ("falemu down", "every falemu runner container of this engine"),
        ("falemu down --app greeter", "only greeter's"),
        ("falemu down --orphans", "only those left by a falemu process that is gone"),
        ("falemu down --project examples/direct-server", "only the runners of that project's apps"),
    ),
)
@click.option("--app", "app", default=None, help="Only the runners of this app (its deployed name).")
@click.option("--orphans", is_flag=True, help="Only runners whose falemu process is gone.")
@project_option
def down(app: str | None, orphans: bool, project: Path | None) -> None:
    """Remove every runner container labelled by falemu, running or not.

    That includes the runners of a `falemu up` still running (it starts new ones on demand); --orphans
    removes only those whose falemu process is gone. Containers without falemu's labels are never touched.
    """
    from falemu import state
    from falemu.errors import EngineUnavailable
    from falemu.runtime.cleanup import reap_orphans, remove_containers
    from falemu.runtime.engine import connect

    try:
        client = connect()
    except EngineUnavailable as exc:  # its hint names --runtime, which down does not have
        raise EngineUnavailable(
            exc.message, hint="start Docker (or set DOCKER_HOST); process runners end with their falemu up"
        ) from None
    only = {app} if app is not None else (_project_aliases(project) if project is not None else None)
    try:
        if orphans:
            removed = reap_orphans(client)  # orphans belong to no live falemu: all of them go
        elif only is None:
            removed = remove_containers(client)
        else:
            removed = [r for alias in sorted(only) for r in remove_containers(client, alias)]
    finally:
        client.close()
    for item in removed:
        click.echo(f"removed {item.name} ({item.app} runner {item.runner})")
    click.echo(f"{len(removed)} container(s) removed")

    gone = {item.app for item in removed}
    for instance in state.instances():
        if not gone & set(instance.apps):
            continue
        click.echo(
            f"note: the falemu up of pid {instance.pid} ({instance.url}) still runs and starts runners again on "
            "demand; stop it with Ctrl-C in its terminal",
            err=True,
        )


def _project_aliases(project: Path) -> set[str]:
    """The deployed names of a project's apps (the table key for an app that does not parse)."""
    from falemu.config import load_project
    from falemu.errors import ConfigError

    loaded = load_project(project)
    aliases: set[str] = set()
    for name in loaded.app_names:
        try:
            aliases.add(loaded.app(name).alias)
        except ConfigError:
            aliases.add(name)
    return aliases
