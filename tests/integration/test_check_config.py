"""`falemu check` exits 2 on a pyproject fal would reject, before building anything."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

from click.testing import CliRunner

from falemu.cli import cli

BAD = """
[tool.fal.apps.bad]
exposed_port = 8000
min-concurrency = 2
[tool.fal.apps.bad.image]
dockerfile = "Dockerfile"
"""


def test_config_error_exits_2_with_fals_message(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(BAD)
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    junit = tmp_path / "junit.xml"
    result = CliRunner().invoke(cli, ["check", "--project", str(tmp_path), "--junit-xml", str(junit)])
    assert result.exit_code == 2, result.output
    assert "Found unexpected keys in pyproject.toml" in result.stderr
    case = ET.parse(junit).getroot().find("testsuite/testcase")
    assert case is not None
    assert case.get("name") == "config"
    assert case.find("failure") is not None


def test_unknown_app_exits_2(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(BAD)
    result = CliRunner().invoke(cli, ["check", "--project", str(tmp_path), "nope", "--json"])
    assert result.exit_code == 2
    data = json.loads(result.stdout)
    assert data["apps"][0]["checks"][0]["findings"][0]["message"] == "App nope not found in pyproject.toml"


def test_update_baseline_needs_a_file(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(BAD)
    result = CliRunner().invoke(cli, ["check", "--project", str(tmp_path), "--update-baseline"])
    assert result.exit_code == 2
    assert "--update-baseline needs --baseline FILE" in result.stderr


def test_ci_examples_call_check_with_real_options() -> None:
    import shlex

    import yaml

    from falemu.cli.check import check

    root = Path(__file__).resolve().parents[2] / "examples" / "ci"
    commands: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)
        elif isinstance(node, str) and node.strip().startswith("falemu check --"):
            commands.append(node)

    for name in ("github-actions.yml", "gitlab-ci.yml"):
        walk(yaml.safe_load((root / name).read_text()))
    assert len(commands) == 2
    for command in commands:
        text = command.replace("\\\n", " ").replace("${{ github.run_id }}", "1").replace("$CI_PIPELINE_IID", "1")
        args = shlex.split(text)
        ctx = check.make_context("check", args[args.index("check") + 1 :])
        assert ctx.params["junit_xml"] is not None
        assert ctx.params["baseline"] is not None
