"""falemu's own settings: defaults < [tool.falemu] < FALEMU_* < CLI flags, each value with its source."""

from __future__ import annotations

from pathlib import Path

import pytest

from falemu.config import load_project, load_settings, project_settings
from falemu.errors import ConfigError


def test_defaults_when_nothing_is_set() -> None:
    settings = load_settings(None, environ={}, cli=None)
    assert (settings.owner, settings.port, settings.runtime, settings.gpu) == ("local", 8787, "auto", "auto")
    assert set(settings.sources.values()) == {"default"}


def test_each_layer_beats_the_one_below() -> None:
    table = {"owner": "team-a", "port": 9000, "gpu": "off", "tls": True}
    env = {"FALEMU_PORT": "9100", "FALEMU_GPU": "require"}
    cli = {"gpu": "auto"}
    settings = load_settings(table, environ=env, cli=cli)
    assert settings.owner == "team-a"
    assert settings.sources["owner"] == "pyproject"
    assert settings.tls is True
    assert settings.sources["tls"] == "pyproject"
    assert settings.port == 9100
    assert settings.sources["port"] == "env"
    assert settings.gpu == "auto"
    assert settings.sources["gpu"] == "cli"
    assert settings.host == "127.0.0.1"
    assert settings.sources["host"] == "default"


def test_cli_none_means_not_given() -> None:
    settings = load_settings({"port": 9000}, environ={}, cli={"port": None})
    assert settings.port == 9000
    assert settings.sources["port"] == "pyproject"


def test_dashed_keys_in_tool_falemu() -> None:
    settings = load_settings({"keep-failed": True, "machine-limits": "yes"}, environ={})
    assert settings.keep_failed is True
    assert settings.machine_limits is True


@pytest.mark.parametrize(
    ("table", "env", "fragment"),
    [
        ({"prot": 1}, {}, "Unknown falemu setting 'prot'"),
        ({"port": "lots"}, {}, "[tool.falemu] port must be an integer"),
        ({}, {"FALEMU_PORT": "70000"}, "FALEMU_PORT must be between 0 and 65535"),
        ({}, {"FALEMU_RUNTIME": "kubernetes"}, "FALEMU_RUNTIME must be one of auto, docker, process"),
        ({"runtime": "kubernetes"}, {}, "[tool.falemu] runtime must be one of auto, docker, process"),
        ({"tls": "maybe"}, {}, "[tool.falemu] tls must be a boolean"),
    ],
)
def test_bad_values_are_config_errors(table: dict[str, object], env: dict[str, str], fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(table, environ=env)
    assert fragment in info.value.message
    assert info.value.hint


def test_a_misspelt_tool_falemu_key_names_the_setting_it_meant() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({"ownr": "acme"}, environ={})
    assert info.value.message == "Unknown falemu setting 'ownr' in [tool.falemu]"
    assert (info.value.hint or "").startswith("did you mean `owner`? known settings: ")


def test_a_bad_flag_is_named_once() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(environ={}, cli={"port": 99999})
    assert info.value.message == "--port must be between 0 and 65535, got 99999"
    with pytest.raises(ConfigError) as owner:
        load_settings(environ={}, cli={"owner": "queue"})
    assert owner.value.message.startswith("--owner 'queue' clashes with the gateway's queue API")


def test_project_settings_read_tool_falemu_of_the_same_pyproject(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[tool.fal.apps.a]\nref = "app.py"\n\n[tool.falemu]\nowner = "acme"\nport = 9001\n'
    )
    project = load_project(tmp_path)
    assert project.falemu == {"owner": "acme", "port": 9001}
    settings = project_settings(project, environ={"FALEMU_OWNER": "ci"}, cli={"port": 9002})
    assert (settings.owner, settings.sources["owner"]) == ("ci", "env")
    assert (settings.port, settings.sources["port"]) == (9002, "cli")


def test_tool_falemu_must_be_a_table(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool]\nfalemu = "x"\n[tool.fal.apps.a]\nref = "a.py"\n')
    with pytest.raises(ConfigError, match=r"\[tool.falemu\]"):
        load_project(tmp_path)


@pytest.mark.parametrize(
    ("owner", "message"),
    [
        ("queue", "clashes with the gateway's queue API"),
        ("QUEUE", "clashes with the gateway's queue API"),
        ("api", "clashes with the JS client proxy"),
        ("team/a", "one URL path segment"),
        ("_falemu", "one URL path segment"),
        ("", "one URL path segment"),
    ],
)
def test_an_owner_the_urls_cannot_carry_is_a_config_error(owner: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        load_settings(environ={"FALEMU_OWNER": owner})
    assert "FALEMU_OWNER" in info.value.message
    assert info.value.hint


def test_usual_owners_are_accepted() -> None:
    for owner in ("local", "team-a", "acme.ai", "user_1"):
        assert load_settings(environ={"FALEMU_OWNER": owner}).owner == owner
