"""``falemu keys``: list, create and revoke the local API keys the gateway accepts."""

from __future__ import annotations

import datetime as dt
import json
from typing import TYPE_CHECKING

import click

from falemu.cli.options import examples

if TYPE_CHECKING:
    from falemu.gateway.keys import KeyStore


def _store() -> KeyStore:
    from falemu.gateway.keys import KeyStore

    return KeyStore()


@click.group(
    "keys",
    epilog=examples(
        ("falemu keys create --label ci", "a new key, printed once as FAL_KEY=<id>:<secret>"),
        ("falemu keys list", "ids, users and labels"),
        ("falemu keys revoke 33aa73a7", "by id or a unique prefix of it"),
    ),
)
def keys() -> None:
    """Local API keys (`Authorization: Key <id>:<secret>`), kept in falemu's config folder (mode 0600).

    Only a hash of each secret is stored, so a secret is shown once, when it is created. The default
    key, made on first use for `falemu env`, is the exception: it is kept so it can be printed again.
    """


@keys.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_keys(as_json: bool) -> None:
    """List keys: id, user, label, creation time. Secrets are never shown."""
    store = _store()
    items = store.list()
    if as_json:
        rows = [
            {"id": k.id, "user": k.user, "label": k.label, "created": k.created, "default": k.default} for k in items
        ]
        click.echo(json.dumps(rows))
        return
    if not items:
        click.echo("no keys yet; `falemu keys create` makes one (`falemu env` makes the default key)")
        return
    click.echo(f"{'ID':<36}  {'USER':<12}  {'CREATED':<19}  LABEL")
    for key in items:
        created = dt.datetime.fromtimestamp(key.created).strftime("%Y-%m-%d %H:%M:%S")
        label = key.label + (" (default)" if key.default else "")
        click.echo(f"{key.id:<36}  {key.user:<12}  {created:<19}  {label}")


@keys.command("create")
@click.option("--label", default="", help="A note to tell keys apart.")
@click.option(
    "--user",
    default=None,
    help="The user the key belongs to (default: you, the local user, who may call every app falemu serves; "
    "another user's key may call private apps only of that owner).",
)
def create_key(label: str, user: str | None) -> None:
    """Create a key and print it once, as FAL_KEY=<id>:<secret>."""
    store = _store()
    key, value = store.create(label, user=user)
    _tell_running_gateways()
    click.echo(f"FAL_KEY={value}")
    click.echo(f"created key {key.id} for user {key.user}; the secret is not shown again", err=True)


@keys.command("revoke")
@click.argument("key_id")
def revoke_key(key_id: str) -> None:
    """Revoke a key by id (a unique prefix is enough); a running gateway refuses it at once."""
    store = _store()
    key = store.revoke(key_id)
    told = _tell_running_gateways()
    where = f"; {told} running falemu up refuse{'s' if told == 1 else ''} it now" if told else ""
    click.echo(f"revoked key {key.id} ({key.user}){where}")


def _tell_running_gateways() -> int:
    from falemu import state

    return state.notify_key_change()
