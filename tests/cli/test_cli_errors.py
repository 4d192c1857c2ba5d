"""Command-line errors read like every other falemu error: ``error:`` and ``hint:``, one line each.

Through the real entry point (click's CliRunner for parsing, a subprocess where the order of the checks
matters), with no Docker engine needed.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from falemu.cli import cli

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "direct-server"


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), env=env, prog_name="falemu")


def assert_one_error(result: Result, *, message: str, hint: str, code: int = 2) -> None:
    assert result.exit_code == code, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 2, result.stderr
    assert lines[0].startswith("error: "), lines
    assert message in lines[0], lines
    assert lines[1].startswith("hint: "), lines
    assert hint in lines[1], lines
    assert "Usage:" not in result.stderr
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("args", "message", "hint"),
    [
        (["up", "--port", "abc"], "Invalid value for '--port': 'abc' is not a valid integer", "`falemu up --help`"),
        (["up", "--gpu", "maybe"], "Invalid value for '--gpu'", "`falemu up --help`"),
        (["check", "--max-examples", "0"], "Invalid value for '--max-examples'", "`falemu check --help`"),
        (["logs", "--tail", "-1"], "Invalid value for '--tail'", "`falemu logs --help`"),
        (["keys", "revoke"], "Missing argument 'KEY_ID'", "`falemu keys revoke --help`"),
        (["--bogus"], "No such option '--bogus'", "`falemu --help`"),
    ],
    ids=["port-not-int", "gpu-choice", "max-examples-range", "negative-tail", "missing-argument", "group-option"],
)
def test_bad_flag_values_are_one_error_and_one_hint(args: list[str], message: str, hint: str) -> None:
    assert_one_error(run(*args), message=message, hint=hint)


def test_a_mistyped_command_suggests_the_close_one() -> None:
    assert_one_error(run("upp"), message="No such command 'upp'", hint="did you mean `falemu up`?")


def test_an_unknown_command_lists_the_commands() -> None:
    from falemu.cli import COMMANDS

    result = run("deploy")
    assert_one_error(result, message="No such command 'deploy'", hint="commands: " + ", ".join(sorted(COMMANDS)))


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def test_busy_gateway_port_fails_before_any_runtime_or_build(tmp_path: Path, busy_port: int) -> None:
    # No engine answers here: the port error must come first, before a build could take minutes.
    env = {
        **os.environ,
        "DOCKER_HOST": f"unix://{tmp_path}/nope.sock",
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "XDG_RUNTIME_DIR": str(tmp_path / "run"),
    }
    done = subprocess.run(
        [sys.executable, "-m", "falemu", "up", "--runtime", "docker", "--port", str(busy_port)],
        cwd=EXAMPLE,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        f"error: cannot listen on 127.0.0.1:{busy_port}: Address already in use",
        "hint: another falemu up may be running (see `falemu ps`); pick another port with --port, or --port 0",
    ]
    assert done.stdout == ""


def test_no_docker_with_runtime_docker_is_one_error_with_a_hint(tmp_path: Path) -> None:
    env = {
        "DOCKER_HOST": f"unix://{tmp_path}/nope.sock",
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "XDG_RUNTIME_DIR": str(tmp_path / "run"),
    }
    result = run("up", "--project", str(EXAMPLE), "--runtime", "docker", "--port", "0", env=env)
    assert_one_error(result, message="no Docker engine answers at unix://", hint="--runtime process", code=1)


@pytest.mark.parametrize("command", ["up", "check"])
def test_a_pyproject_without_apps_says_how_to_add_one(tmp_path: Path, command: str) -> None:
    (tmp_path / ".git").mkdir()
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n')
    result = run(command, "--project", str(tmp_path))
    assert_one_error(result, message="declares no [tool.fal.apps.<name>] table", hint="[tool.fal.apps.<name>]")
    assert "falemu config --help" not in result.stderr


def test_every_command_help_has_examples_and_the_same_option_words() -> None:
    for command in (["up"], ["check"], ["env"], ["logs"], ["keys"], ["down"], ["config"]):
        result = run(*command, "--help")
        assert result.exit_code == 0, result.output
        assert "Examples:\n    falemu " in result.stdout or "Examples:\n    eval " in result.stdout, command
    up_help, check_help = run("up", "--help").stdout, run("check", "--help").stdout
    for words in ("require (fail without GPUs)", "process (host processes"):
        assert words in " ".join(up_help.split()), words
        assert words in " ".join(check_help.split()), words


def test_revoking_an_unknown_key_is_one_error_with_a_hint(tmp_path: Path) -> None:
    env = {"XDG_CONFIG_HOME": str(tmp_path / "config"), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    result = run("keys", "revoke", "nope", env=env)
    assert_one_error(result, message="no key with id 'nope'", hint="`falemu keys list`", code=2)


def test_down_without_an_engine_does_not_suggest_a_flag_it_lacks(tmp_path: Path) -> None:
    result = run("down", env={"DOCKER_HOST": f"unix://{tmp_path}/nope.sock"})
    assert_one_error(result, message="no Docker engine answers at unix://", hint="start Docker", code=1)
    assert "--runtime" not in result.stderr


def test_project_may_name_the_pyproject_file_itself() -> None:
    result = run("config", "validate", "--project", str(EXAMPLE / "pyproject.toml"))
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("ok greeter ")


def test_ctrl_c_in_a_command_exits_130_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """Not click's "Aborted!" and exit 1, which `falemu check` also uses for contract violations."""
    import falemu.cli.check

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(falemu.cli.check, "load_for", interrupted)
    result = CliRunner().invoke(cli, ["check"])
    assert result.exit_code == 130, result.output
    assert result.stderr.strip() == "interrupted"
