"""Mistakes in a project that only show when falemu builds or loads it exit 2 like every config error,
with a message that names the mistake: a Dockerfile the engine refuses, a ref file that is not there."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from falemu.cli import cli

pytestmark = pytest.mark.docker


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), prog_name="falemu")


def project(root: Path, body: str, **files: str) -> Path:
    (root / ".git").mkdir(parents=True)
    (root / "pyproject.toml").write_text("[project]\nname = 'p'\n\n" + body)
    for name, text in files.items():
        (root / name).write_text(text)
    return root


def test_a_dockerfile_syntax_error_exits_2_and_says_so(tmp_path: Path, isolated_home: Path) -> None:
    root = project(
        tmp_path / "p",
        '[tool.fal.apps.broken]\nexposed_port = 8000\nimage = { dockerfile = "Dockerfile" }\n',
        Dockerfile="FRM python:3.11-slim\n",
    )
    for command in (("up", "--port", "0"), ("check",)):
        result = run(*command, "--project", str(root), "--runtime", "docker")
        assert result.exit_code == 2, (command, result.output)
        assert "image build of broken failed before its first step: " in result.output, result.output
        assert "failed at before" not in result.output
        assert "fix the Dockerfile" in result.output
        assert "Traceback" not in result.output


def test_a_missing_ref_file_exits_2_and_names_the_file(tmp_path: Path, isolated_home: Path) -> None:
    root = project(tmp_path / "p", '[tool.fal.apps.a]\nref = "missing.py::App"\n')
    result = run("up", "--port", "0", "--project", str(root), "--runtime", "docker")
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ref file "), result.stderr
    assert "missing.py does not exist" in result.stderr
    assert "image table" not in result.stderr
