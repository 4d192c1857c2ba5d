"""Local API keys: storage, verification, revocation, and the `falemu keys` / `falemu env` commands."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from falemu.cli import cli
from falemu.errors import FalemuError
from falemu.gateway.keys import KeyStore, parse_authorization


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Key abc:def", ("abc", "def")),
        ("Bearer abc:def", ("abc", "def")),
        ("key  abc:de:f", ("abc", "de:f")),
        ("Key abc", None),
        ("Key :def", None),
        ("Basic abc:def", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_authorization(header: str | None, expected: tuple[str, str] | None) -> None:
    assert parse_authorization(header) == expected


def test_keys_file_is_private_and_holds_no_secret(tmp_path: Path) -> None:
    store = KeyStore(tmp_path)
    key, value = store.create("ci")
    secret = value.split(":", 1)[1]
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    text = store.path.read_text()
    assert secret not in text
    assert json.loads(text)["keys"][0]["id"] == key.id


def test_verify_accepts_the_right_secret_only(tmp_path: Path) -> None:
    store = KeyStore(tmp_path, user="local")
    key, value = store.create()
    key_id, secret = value.split(":", 1)
    caller = store.verify(key_id, secret)
    assert caller is not None
    assert (caller.user, caller.key_id) == ("local", key.id)
    assert store.verify(key_id, secret + "x") is None
    assert store.verify("unknown", secret) is None
    assert store.authenticate(f"Key {value}") is not None
    assert store.authenticate(f"Bearer {value}") is not None
    assert store.authenticate("Key nope") is None


def test_default_key_is_made_once_and_kept(tmp_path: Path) -> None:
    store = KeyStore(tmp_path)
    first = store.default_key()
    assert KeyStore(tmp_path).default_key() == first
    assert stat.S_IMODE(store.default_path.stat().st_mode) == 0o600
    assert store.verify(*first.split(":", 1)) is not None
    store.revoke(first.split(":")[0])
    assert not store.default_path.exists()
    second = store.default_key()
    assert second != first


def test_revoke_by_prefix_and_errors(tmp_path: Path) -> None:
    store = KeyStore(tmp_path)
    key, value = store.create()
    store.revoke(key.id[:8])
    assert store.verify(*value.split(":", 1)) is None
    with pytest.raises(FalemuError, match="no key"):
        store.revoke(key.id)


def test_a_change_by_another_process_is_seen(tmp_path: Path) -> None:
    gateway_view = KeyStore(tmp_path)
    _, value = KeyStore(tmp_path).create()
    assert gateway_view.verify(*value.split(":", 1)) is not None


def test_broken_key_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "keys.json").write_text("{not json")
    with pytest.raises(FalemuError, match="not a falemu key file") as info:
        KeyStore(tmp_path).list()
    assert info.value.hint is not None


def test_keys_cli_create_list_revoke(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FALEMU_CONFIG_DIR", str(tmp_path))
    runner = CliRunner()
    created = runner.invoke(cli, ["keys", "create", "--label", "laptop"])
    assert created.exit_code == 0, created.output
    value = created.stdout.strip().removeprefix("FAL_KEY=")
    key_id, secret = value.split(":", 1)
    listed = runner.invoke(cli, ["keys", "list"])
    assert key_id in listed.stdout
    assert "laptop" in listed.stdout
    assert secret not in listed.output
    as_json = json.loads(runner.invoke(cli, ["keys", "list", "--json"]).stdout)
    assert as_json[0]["id"] == key_id
    assert "secret" not in json.dumps(as_json)
    revoked = runner.invoke(cli, ["keys", "revoke", key_id])
    assert revoked.exit_code == 0
    assert key_id not in runner.invoke(cli, ["keys", "list"]).stdout
    missing = runner.invoke(cli, ["keys", "revoke", key_id])
    assert missing.exit_code == 2  # a bad argument, as for every command
    assert "error: no key" in missing.output


def test_env_cli_prints_exports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FALEMU_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))  # no running falemu up
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    result = runner.invoke(cli, ["env", "--port", "9999"])
    assert result.exit_code == 0, result.output
    exports = dict(line.removeprefix("export ").split("=", 1) for line in result.stdout.splitlines())
    assert exports["FAL_RUN_HOST"] == "127.0.0.1:9999"
    assert exports["FAL_QUEUE_RUN_HOST"] == "127.0.0.1:9999/queue"
    bundle = Path(exports["SSL_CERT_FILE"])
    assert b"BEGIN CERTIFICATE" in bundle.read_bytes()
    assert KeyStore(tmp_path / "config").verify(*exports["FAL_KEY"].split(":", 1)) is not None
    again = runner.invoke(cli, ["env", "--port", "9999"])
    assert again.stdout == result.stdout  # the same key every time
    fish = runner.invoke(cli, ["env", "--port", "9999", "--shell", "fish"])
    assert "set -gx FAL_RUN_HOST '127.0.0.1:9999';" in fish.stdout


def test_env_cli_warns_when_no_falemu_up_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FALEMU_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    monkeypatch.setenv("FALEMU_PORT", "8123")
    monkeypatch.delenv("FALEMU_TLS", raising=False)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["env"])
    assert result.exit_code == 0
    assert "export FAL_RUN_HOST=127.0.0.1:8123" in result.stdout
    assert "export HTTPS_PROXY=http://127.0.0.1:8123" in result.stdout
    assert "no falemu up is running" in result.stderr
    assert "unset HTTPS_PROXY" in result.stderr


def test_env_cli_follows_a_running_falemu_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from falemu.state import Instance, state_dir

    monkeypatch.setenv("FALEMU_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    monkeypatch.chdir(tmp_path)
    instance = Instance(
        pid=os.getpid(), url="https://127.0.0.1:45678", admin_token="t", project=".", apps=["a"], started=1.0
    )
    state_dir().mkdir(parents=True)
    (state_dir() / f"{os.getpid()}.json").write_text(instance.to_json())
    result = CliRunner().invoke(cli, ["env"])
    assert result.exit_code == 0
    assert "export FAL_RUN_HOST=127.0.0.1:45678" in result.stdout
    assert "export FAL_QUEUE_RUN_HOST=127.0.0.1:45678/queue" in result.stdout
    assert "export HTTPS_PROXY=http://127.0.0.1:45678" in result.stdout
    assert "export NO_PROXY=localhost,127.0.0.1,::1" in result.stdout
    assert result.stderr == ""
