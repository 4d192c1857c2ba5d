"""``falemu down``: remove the containers falemu made that it was asked to (and nothing else)."""

from __future__ import annotations

from pathlib import Path

import click

from falemu.cli.options import examples, project_option


@click.command(
    "down",
    epilog=examples(
        ("falemu down", "every falemu runner container of this engine"),
        ("falemu down --app greeter", "greeter's runners of the project found from the current folder"),
        ("falemu down --orphans", "only those left by a falemu process that is gone"),
        ("falemu down --project examples/direct-server", "only the runners of that project's apps"),
    ),
)
@click.option("--app", "app", default=None, help="Only the runners of this app (its deployed name) of the project.")
@click.option("--orphans", is_flag=True, help="Only runners whose falemu process is gone (of any project).")
@project_option
def down(app: str | None, orphans: bool, project: Path | None) -> None:
    """Remove falemu's runner containers, running or not.

    Alone, it removes every runner container labelled by falemu, including those of a `falemu up` still
    running (it starts new ones on demand). --project and --app keep to one project's runners (--app
    alone: the project found from the current folder, as fal finds it); runners of another project with
    the same app name are left alone and listed with the reason. --orphans removes only runners whose
    falemu process is gone. Containers without falemu's labels are never touched.
    """
    from falemu import state
    from falemu.errors import ConfigError, EngineUnavailable
    from falemu.runtime import labels
    from falemu.runtime.cleanup import falemu_containers, plan_down, reap_orphans, remove_containers, remove_planned
    from falemu.runtime.engine import connect
    from falemu.runtime.engine_api import EngineAPI

    scope: Path | None = None
    aliases: set[str] | None = None
    known: tuple[Path, set[str]] | None = None  # the project's pyproject and apps, to check --app against
    if project is not None:
        scope, project_apps = _project(project)
        aliases = {app} if app is not None else project_apps
        known = (scope, project_apps)
    elif app is not None:
        found = _discovered()
        scope = found[0] if found is not None else None
        aliases = {app}
        known = found
    live = {instance.pid: labels.project_label(instance.project) for instance in state.instances()}
    try:
        client = connect()
    except EngineUnavailable as exc:  # its hint names --runtime, which down does not have
        raise EngineUnavailable(
            exc.message, hint="start Docker (or set DOCKER_HOST); process runners end with their falemu up"
        ) from None
    skipped = []
    try:
        if orphans:
            removed = reap_orphans(EngineAPI(sdk=lambda: client))  # orphans belong to no live falemu: all go
        elif aliases is None:
            removed = remove_containers(client)
        else:
            plan = plan_down(falemu_containers(client), apps=aliases, project=scope, live_projects=live)
            removed = remove_planned(plan)
            skipped = plan.skipped
    finally:
        client.close()
    for item in removed:
        click.echo(f"removed {item.name} ({item.app} runner {item.runner})")
    for skip in skipped:
        click.echo(f"skipped {skip.name} ({skip.app} runner {skip.runner}): {skip.reason}")
    if app is not None and not removed and not skipped and known is not None and app not in known[1]:
        # a misspelt name removes nothing: say so rather than "0 container(s) removed" (an app since
        # dropped from the pyproject still has its runners removed above)
        raise ConfigError(
            f"no app {app!r} in the project at {known[0]}, and no runner of that name",
            hint="its apps: " + (", ".join(sorted(known[1])) or "none") + " (--app takes the deployed name)",
        )
    click.echo(f"{len(removed)} container(s) removed" + (f", {len(skipped)} skipped" if skipped else ""))

    gone = {item.app for item in removed}
    for instance in state.instances(scope):
        if not gone & set(instance.apps):
            continue
        click.echo(
            f"note: the falemu up of pid {instance.pid} ({instance.url}) still runs and starts runners again on "
            "demand; stop it with Ctrl-C in its terminal",
            err=True,
        )


def _project(project: Path | None) -> tuple[Path, set[str]]:
    """A project's root and the deployed names of its apps (the table key for an app that does not parse)."""
    from falemu.config import load_project
    from falemu.errors import ConfigError

    loaded = load_project(project)
    aliases: set[str] = set()
    for name in loaded.app_names:
        try:
            aliases.add(loaded.app(name).alias)
        except ConfigError:
            aliases.add(name)
    return loaded.root, aliases


def _discovered() -> tuple[Path, set[str]] | None:
    """The project fal would find from the current folder (its root and apps), if it has a pyproject.toml."""
    from falemu.errors import ConfigError

    try:
        return _project(None)
    except ConfigError:
        return None
