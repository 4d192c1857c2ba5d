"""``falemu env``: the exports that point fal_client (and the fal SDK) at falemu's gateway."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import click

from falemu.cli.options import examples, project_option

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


def gateway_address(host: str | None, port: int | None, project: Project | None) -> tuple[str, bool, str]:
    """(host:port, tls, where it came from): flags, else a running `falemu up`, else the settings."""
    from falemu import state

    if port is None:
        running = state.instances()
        if running:
            url = urlsplit(running[-1].url)
            return url.netloc, url.scheme == "https", f"the falemu up of pid {running[-1].pid}"
    from falemu.config.settings import load_settings

    settings = load_settings(dict(project.falemu) if project is not None else None)
    shown = host or settings.host
    shown = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(shown, shown)
    if ":" in shown:
        shown = f"[{shown}]"
    if port is not None:
        return f"{shown}:{port}", True, "flags"
    return f"{shown}:{settings.port}", settings.tls, "settings"


def env_warnings(address: str, tls: bool, source: str) -> list[str]:
    """What a user should know about the exports: no gateway to point at, or one fal_client cannot speak to."""
    warnings = []
    restart = "start it with `falemu up --tls`"
    if source == "settings":
        warnings.append(f"no falemu up is running; these exports point at {address}, from falemu's settings")
    else:
        restart = "restart it with `falemu up --tls`"
    if not tls:  # (an address given by flags is taken to be a TLS gateway)
        gateway = "that gateway" if source == "settings" else source
        warnings.append(f"{gateway} serves plain HTTP, and fal_client only speaks HTTPS; {restart}")
    return warnings


@click.command(
    "env",
    epilog=examples(
        ('eval "$(falemu env)"', "point fal_client in this shell at the running falemu up"),
        ("falemu env --shell fish | source", "the same, in fish"),
        ("falemu env --port 8443", "for a gateway on another port (TLS assumed)"),
    ),
)
@project_option
@click.option("--host", default=None, help="Gateway address (default: the running falemu up, else settings).")
@click.option("--port", type=int, default=None, help="Gateway port (default: the running falemu up, else settings).")
@click.option("--shell", type=click.Choice(["sh", "fish", "powershell"]), default="sh", help="Output syntax.")
def env(project: Path | None, host: str | None, port: int | None, shell: str) -> None:
    """Print FAL_RUN_HOST, FAL_QUEUE_RUN_HOST, SSL_CERT_FILE and FAL_KEY for fal_client.

    Use it as `eval "$(falemu env)"`. fal_client only speaks HTTPS, so the gateway must serve TLS
    (`falemu up --tls`); SSL_CERT_FILE names falemu's CA together with the usual public roots. FAL_KEY
    is falemu's default local key, made on first use.
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
    address, tls, source = gateway_address(host, port, loaded)
    values = {
        "FAL_RUN_HOST": address,
        "FAL_QUEUE_RUN_HOST": f"{address}/queue",
        "SSL_CERT_FILE": client_bundle(),
        "FAL_KEY": KeyStore().default_key(),
    }
    for line in env_warnings(address, tls, source):
        click.echo(f"warning: {line}", err=True)
    click.echo(render(values, shell))
