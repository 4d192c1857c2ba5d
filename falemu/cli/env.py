"""``falemu env``: the exports that point fal_client (and the fal SDK) at falemu's gateway."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import click

from falemu.cli.options import examples, project_option, running_instances

if TYPE_CHECKING:
    from falemu.config.model import Project


def _quote(value: str, shell: str) -> str:
    if shell == "fish":
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if shell == "powershell":
        return "'" + value.replace("'", "''") + "'"
    return shlex.quote(value)


def render(values: dict[str, str], shell: str) -> str:
    """Export lines for ``shell`` (sh, fish or powershell)."""
    lines = []
    for name, value in values.items():
        quoted = _quote(value, shell)
        if shell == "fish":
            lines.append(f"set -gx {name} {quoted};")
        elif shell == "powershell":
            lines.append(f"$Env:{name} = {quoted}")
        else:
            lines.append(f"export {name}={quoted}")
    return "\n".join(lines)


NO_PROXY = "localhost,127.0.0.1,::1"


def gateway_address(
    host: str | None, port: int | None, project: Project | None, project_flag: Path | None = None
) -> tuple[str, str]:
    """(host:port, where it came from): flags, else a running `falemu up` (this project's when one runs),
    else the settings."""
    if port is None:
        running = running_instances(project_flag)
        if running:
            url = urlsplit(running[-1].url)
            return url.netloc, f"the falemu up of pid {running[-1].pid}"
    from falemu.config.settings import load_settings

    settings = load_settings(dict(project.falemu) if project is not None else None)
    shown = host or settings.host
    shown = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(shown, shown)
    if ":" in shown:
        shown = f"[{shown}]"
    if port is not None:
        return f"{shown}:{port}", "flags"
    return f"{shown}:{settings.port}", "settings"


def env_warnings(address: str, source: str) -> list[str]:
    """What a user should know about the exports: there is no gateway at that address yet."""
    if source != "settings":
        return []
    return [
        f"no falemu up is running; these exports point at {address}, from falemu's settings",
        f"until a falemu up serves {address}, HTTPS to other hosts fails in a shell with these exports "
        "(HTTPS_PROXY): start one, or `unset HTTPS_PROXY`",
    ]


@click.command(
    "env",
    epilog=examples(
        ('eval "$(falemu env)"', "point fal_client in this shell at the running falemu up"),
        ("falemu env --shell fish | source", "the same, in fish"),
        ("falemu env --port 8788", "for a gateway on another port"),
    ),
)
@project_option
@click.option("--host", default=None, help="Gateway address (default: the running falemu up, else settings).")
@click.option("--port", type=int, default=None, help="Gateway port (default: the running falemu up, else settings).")
@click.option("--shell", type=click.Choice(["sh", "fish", "powershell"]), default="sh", help="Output syntax.")
def env(project: Path | None, host: str | None, port: int | None, shell: str) -> None:
    """Print FAL_RUN_HOST, FAL_QUEUE_RUN_HOST, SSL_CERT_FILE, FAL_KEY, HTTPS_PROXY and NO_PROXY for fal_client.

    Use it as `eval "$(falemu env)"`. The gateway answers HTTPS (fal_client's) and HTTP on one port;
    SSL_CERT_FILE names falemu's CA together with the usual public roots. FAL_KEY is falemu's default
    local key, made on first use. HTTPS_PROXY sends HTTPS to other hosts through the gateway, so
    fal_client's uploads to rest.fal.ai and v3.fal.media reach falemu while everything else passes
    through unchanged; NO_PROXY keeps localhost direct.
    """
    from falemu.config import load_project
    from falemu.errors import ConfigError
    from falemu.gateway.keys import KeyStore
    from falemu.gateway.tls import client_bundle

    loaded: Project | None = None
    if project is not None:
        loaded = load_project(project)
    else:
        try:  # [tool.falemu] of the project around the current folder, when there is one
            loaded = load_project()
        except ConfigError:
            loaded = None
    address, source = gateway_address(host, port, loaded, project)
    values = {
        "FAL_RUN_HOST": address,
        "FAL_QUEUE_RUN_HOST": f"{address}/queue",
        "SSL_CERT_FILE": client_bundle(),
        "FAL_KEY": KeyStore().default_key(),
        "HTTPS_PROXY": f"http://{address}",
        "NO_PROXY": NO_PROXY,
    }
    for line in env_warnings(address, source):
        click.echo(f"warning: {line}", err=True)
    click.echo(render(values, shell))
