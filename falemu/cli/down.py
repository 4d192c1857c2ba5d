"""``falemu down``: remove every container falemu made (and nothing else)."""

from __future__ import annotations

import click

from falemu.cli.options import examples


@click.command(
    "down",
    epilog=examples(
        ("falemu down", "every falemu runner container of this engine"),
        ("falemu down --app greeter", "only greeter's"),
        ("falemu down --orphans", "only those left by a falemu process that is gone"),
    ),
)
@click.option("--app", "app", default=None, help="Only the runners of this app (its deployed name).")
@click.option("--orphans", is_flag=True, help="Only runners whose falemu process is gone.")
def down(app: str | None, orphans: bool) -> None:
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
    try:
        removed = reap_orphans(client) if orphans else remove_containers(client, app)
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
