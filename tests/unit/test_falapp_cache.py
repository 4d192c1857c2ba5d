"""The cache of fal's loader: a hit for an unchanged App, a miss for any change that could matter."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from falemu.config import _falapp_cache as cache
from falemu.config.falapp import load_ref

APP = """
import fal

class Greeter(fal.App, keep_alive={keep_alive}):
    @fal.endpoint("/")
    def hello(self) -> dict:
        return {{}}
"""


@pytest.fixture
def app_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    folder = tmp_path / "proj"
    folder.mkdir()
    path = folder / "app.py"
    path.write_text(APP.format(keep_alive=5))
    return path


def entries() -> list[Path]:
    return sorted(cache.cache_dir().glob("*.json"))


def test_an_unchanged_app_is_loaded_once(app_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = load_ref(f"{app_file}::Greeter")
    assert first.scaling.keep_alive == 5
    assert len(entries()) == 1
    # A cache hit never runs the loader: break it and load again.
    import falemu.config.falapp as falapp

    monkeypatch.setattr(falapp.subprocess, "run", lambda *a, **k: pytest.fail("the loader ran again"))
    again = load_ref(f"{app_file}::Greeter")
    assert again.scaling == first.scaling
    assert again.fal_app == first.fal_app


def test_a_change_of_the_module_a_sibling_module_or_the_environment_loads_again(
    app_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    load_ref(f"{app_file}::Greeter")
    app_file.write_text(APP.format(keep_alive=7))
    assert load_ref(f"{app_file}::Greeter").scaling.keep_alive == 7
    (app_file.parent / "helpers.py").write_text("X = 1\n")
    load_ref(f"{app_file}::Greeter")
    monkeypatch.setenv("MODEL_NAME", "bigger")
    load_ref(f"{app_file}::Greeter")
    assert len(entries()) == 4


def test_another_terminal_or_falemu_setting_is_a_hit_another_fal_or_python_is_a_miss(
    app_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    load_ref(f"{app_file}::Greeter")
    for name, value in (("SSH_CONNECTION", "10.0.0.2 50000 10.0.0.1 22"), ("TMUX_PANE", "%3"), ("FALEMU_PORT", "9999")):
        monkeypatch.setenv(name, value)
    load_ref(f"{app_file}::Greeter")
    assert len(entries()) == 1
    monkeypatch.setattr(cache, "_fal_version", lambda: "999.0.0")
    load_ref(f"{app_file}::Greeter")
    assert len(entries()) == 2
    monkeypatch.setattr(cache.sys, "version", "3.99.0 (other)")
    load_ref(f"{app_file}::Greeter")
    assert len(entries()) == 3


def test_failed_loads_are_not_kept_and_the_cache_can_be_turned_off(
    app_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from falemu.errors import ConfigError

    app_file.write_text("raise RuntimeError('no')\n")
    with pytest.raises(ConfigError):
        load_ref(f"{app_file}::Greeter")
    assert entries() == []
    monkeypatch.setenv("FALEMU_FALAPP_CACHE", "0")
    app_file.write_text(APP.format(keep_alive=5))
    load_ref(f"{app_file}::Greeter")
    assert entries() == []


def test_a_corrupt_entry_is_a_miss(app_file: Path) -> None:
    load_ref(f"{app_file}::Greeter")
    (entry,) = entries()
    entry.write_text("{not json")
    assert load_ref(f"{app_file}::Greeter").scaling.keep_alive == 5
    assert json.loads(entry.read_text())["ok"] is True


def test_a_reinstalled_fal_is_another_fal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The installed fal is told apart by its version file, without importlib.metadata's 50 ms."""
    import os
    import sys

    package = tmp_path / "fal"
    package.mkdir()
    (package / "__init__.py").write_text("")
    version_file = package / "_fal_version.py"
    version_file.write_text("__version__ = '1.83.0'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "fal", raising=False)
    first = cache._fal_version()
    assert str(version_file) in first
    assert cache._fal_version() == first  # the same install: the same answer
    version_file.write_text("__version__ = '1.84.0'\n")
    os.utime(version_file, ns=(1, 1))
    assert cache._fal_version() != first
    assert "importlib.metadata" not in sys.modules or cache._fal_version() != "?"
