"""``falemu ps``: the runners of every ``falemu up`` running on this machine (for this user)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from falemu.cli.options import project_option, project_root


@click.command("ps")
@click.option("--json", "json_lines", is_flag=True, help="Print JSON.")
@project_option
def ps(json_lines: bool, project: Path | None) -> None:
    """List the apps and runners of each running `falemu up`, with state, requests in flight and age.

    With --project, only the `falemu up` serving that project.
    """
    import httpx

    from falemu import state
    from falemu.cli.output import Renderer

    snapshots: list[dict[str, Any]] = []
    for instance in state.instances(project_root(project)):
        try:
            response = httpx.get(
                f"{instance.url}/_falemu/ps",
                headers={state.ADMIN_HEADER: instance.admin_token},
                verify=instance.verify,
                timeout=5,
            )
        except httpx.HTTPError:
            continue  # it is stopping, or its state file is stale
        if response.status_code == 200:
            snapshots.append(response.json())
    Renderer(json_lines=json_lines).ps(snapshots)
