"""``falemu config validate|show|show-settings`` through the real CLI entry point (click's CliRunner)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from falemu.cli import cli

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "direct-server"


NO_BUILD_ARG_OVERRIDE: dict[str, str | None] = {"FALEMU_BUILD_ARG_BASE_IMAGE": None}  # as a shell may export it


def run(*args: str, env: dict[str, str | None] | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), env=env)


def project(tmp_path: Path, body: str, **files: str) -> Path:
    (tmp_path / "pyproject.toml").write_text(body)
    for name, content in files.items():
        (tmp_path / name).write_text(content)
    return tmp_path


def test_example_direct_server_validates() -> None:
    result = run("config", "validate", "--project", str(EXAMPLE))
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("ok greeter (direct-server, port 8000, image ")
    assert "warning" not in result.stdout
    assert result.stderr == ""


def test_validate_from_the_current_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(EXAMPLE)
    result = run("config", "validate", "greeter")
    assert result.exit_code == 0, result.output
    assert "ok greeter" in result.stdout


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            '[tool.fal.apps.a]\nref = "a.py"\nkeep_alvie = 300\n',
            "error: Found unexpected keys in pyproject.toml: {'keep_alvie': 300}\nhint: did you mean `keep_alive`?\n",
        ),
        (
            '[tool.fal.apps.a]\nref = "a.py"\nregions = ["us-east", "mars"]\n',
            "error: Invalid regions: mars. Valid regions are: eu-north, eu-west, us-central, us-east, us-west\n",
        ),
        (
            '[tool.fal.apps.a]\nimage = { dockerfile = "Dockerfile", image = "repo/x:1" }\n',
            "error: App a image must specify only one of 'dockerfile' or 'image' in pyproject.toml\n",
        ),
        (
            '[tool.fal.apps.a]\nexposed_port = 8000\nimage = { image = "repo/x:1", build_args = { A = "1" } }\n',
            "error: Image key(s) 'build_args' are only supported with image.dockerfile in pyproject.toml\n",
        ),
        (  # falemu's own: fal accepts the name, then cannot serve it either
            '[tool.fal.apps.a]\nname = "a/b"\nexposed_port = 8000\nimage = { image = "repo/x:1" }\n',
            "error: app name 'a/b' cannot be served at /{owner}/{app}: it is not one URL path segment\n",
        ),
    ],
    ids=["unknown-key", "bad-region", "dockerfile-and-image", "build-args-with-image", "name-with-a-slash"],
)
def test_config_errors_exit_2_with_fal_message(tmp_path: Path, body: str, message: str) -> None:
    project(tmp_path, body, Dockerfile="FROM scratch\n")
    result = run("config", "validate", "--project", str(tmp_path))
    assert result.exit_code == 2
    assert result.stderr.startswith(message)
    assert "hint: " in result.stderr
    assert "Traceback" not in result.output
    assert "Traceback" not in result.stderr


def test_no_traceback_in_a_real_process(tmp_path: Path) -> None:
    project(tmp_path, '[tool.fal.apps.a]\nref = "a.py"\nkeep_alvie = 300\n')
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "falemu", "config", "validate", "--project", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.splitlines()[0] == "error: Found unexpected keys in pyproject.toml: {'keep_alvie': 300}"
    assert "Traceback" not in done.stderr + done.stdout


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    project(tmp_path, '[tool.fal.apps.a]\nref = "a.py"\nkeep_alvie = 300\n')
    result = run("--debug", "config", "validate", "--project", str(tmp_path))
    assert result.exit_code == 2
    assert "Traceback" in result.stderr


def test_validate_every_app_reports_each(tmp_path: Path) -> None:
    project(
        tmp_path,
        '[tool.fal.apps.good]\npython_entry_point = "m:A"\nauth = "bogus"\n'
        '[tool.fal.apps.bad]\npython_entry_point = "m:B"\nkeep_alive = "x"\n',
    )
    result = run("config", "validate", "--project", str(tmp_path))
    assert result.exit_code == 2
    assert "ok good (entry-point, port 8080)" in result.stdout
    assert "  warning: auth = 'bogus'" in result.stdout
    assert "invalid bad" in result.stdout
    assert "error: keep_alive must be an integer." in result.stderr
    only_good = run("config", "validate", "good", "--project", str(tmp_path))
    assert only_good.exit_code == 0


def test_validate_refuses_a_misspelt_tool_falemu_key_as_up_does(tmp_path: Path) -> None:
    project(tmp_path, '[tool.fal.apps.a]\npython_entry_point = "m:A"\n\n[tool.falemu]\nownr = "acme"\n')
    result = run("config", "validate", "--project", str(tmp_path))
    assert result.exit_code == 2
    assert result.stderr.startswith(
        "error: Unknown falemu setting 'ownr' in [tool.falemu]\nhint: did you mean `owner`? known settings: "
    )


def test_validate_unknown_app(tmp_path: Path) -> None:
    project(tmp_path, '[tool.fal.apps.a]\npython_entry_point = "m:A"\n')
    result = run("config", "validate", "nope", "--project", str(tmp_path))
    assert result.exit_code == 2
    assert result.stderr.startswith("error: App nope not found in pyproject.toml\nhint: ")


def test_toml_syntax_error(tmp_path: Path) -> None:
    project(tmp_path, "[tool.fal.apps.a\n")
    result = run("config", "validate", "--project", str(tmp_path))
    assert result.exit_code == 2
    assert "pyproject.toml at line 1, column" in result.stderr


def test_show_lists_values_with_sources() -> None:
    result = run("config", "show", "greeter", "--project", str(EXAMPLE))
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == f"[tool.fal.apps.greeter] in {EXAMPLE / 'pyproject.toml'}"
    table = {line.split()[0]: line for line in lines[1:] if line.startswith("  ")}
    assert table["keep_alive"].split()[1:] == ["300", "(pyproject)"]
    assert table["max_multiplexing"].split()[1:] == ["1", "(default)"]
    assert table["health_check.method"].split()[1:] == ["GET", "(derived)"]


def test_show_json() -> None:
    result = run("config", "show", "greeter", "--json", "--project", str(EXAMPLE), env=NO_BUILD_ARG_OVERRIDE)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["app"] == "greeter"
    assert data["values"]["machine_type"] == {"value": ["GPU-H100"], "source": "pyproject"}
    assert data["values"]["image.build_args"]["value"] == {"BASE_IMAGE": "python:3.11-slim"}
    assert data["warnings"] == []


def test_show_names_the_build_args_the_environment_overrides(tmp_path: Path) -> None:
    dockerfile = "ARG BASE_IMAGE=python:3.11-slim\nARG EXTRA\nFROM ${BASE_IMAGE}\n"
    image = '{ dockerfile = "Dockerfile", build_args = { BASE_IMAGE = "x:1" } }'
    body = f"[tool.fal.apps.a]\nexposed_port = 8000\nimage = {image}\n"
    project(tmp_path, body, Dockerfile=dockerfile)
    env = {"FALEMU_BUILD_ARG_BASE_IMAGE": "local:base", "FALEMU_BUILD_ARG_EXTRA": "1", "FALEMU_BUILD_ARG_UNUSED": "2"}
    result = run("config", "show", "a", "--json", "--project", str(tmp_path), env=env)
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)["values"]["image.build_args"]
    assert shown == {
        "value": {"BASE_IMAGE": "local:base", "EXTRA": "1"},  # what the build gets; UNUSED names no ARG
        "source": "pyproject, env FALEMU_BUILD_ARG_BASE_IMAGE, FALEMU_BUILD_ARG_EXTRA",
    }
    result = run("config", "show", "a", "--json", "--project", str(tmp_path), env=NO_BUILD_ARG_OVERRIDE)
    assert json.loads(result.stdout)["values"]["image.build_args"] == {
        "value": {"BASE_IMAGE": "x:1"},
        "source": "pyproject",
    }


def test_show_settings_layers(tmp_path: Path) -> None:
    project(tmp_path, '[tool.fal.apps.a]\nref = "a.py"\n[tool.falemu]\nowner = "acme"\nport = 9000\n')
    result = run("config", "show-settings", "--json", "--project", str(tmp_path), env={"FALEMU_PORT": "9100"})
    assert result.exit_code == 0, result.output
    values = json.loads(result.stdout)["values"]
    assert values["owner"] == {"value": "acme", "source": "pyproject"}
    assert values["port"] == {"value": 9100, "source": "env"}
    assert values["host"]["source"] == "default"


def test_show_settings_without_a_pyproject(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    result = run("config", "show-settings", "--project", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert "no pyproject.toml" in result.stdout
