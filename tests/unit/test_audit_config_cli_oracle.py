"""Issue 2's promise with fal itself as the oracle: ``falemu config validate`` says what ``fal deploy`` says.

For each error the issue names (unknown key, bad region, both ``dockerfile`` and ``image``,
``build_args`` with ``image``) the message is taken from fal 1.83.0's own parser at test time, not
written down here, and the CLI must print exactly ``error: <that message>`` on stderr and exit 2.
The example project validates with exit 0 and fal accepts it too.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from falemu.cli import cli

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "direct-server"

CASES = {
    "unknown-key": '[tool.fal.apps.a]\nexposed_port = 8000\nkeep_alvie = 300\nimage = { dockerfile = "Dockerfile" }\n',
    "bad-region": '[tool.fal.apps.a]\nref = "a.py"\nregions = ["us-east", "mars"]\n',
    "dockerfile-and-image": '[tool.fal.apps.a]\nimage = { dockerfile = "Dockerfile", image = "repo/x:1" }\n',
    "build-args-with-image": (
        '[tool.fal.apps.a]\nexposed_port = 8000\nimage = { image = "repo/x:1", build_args = { A = "1" } }\n'
    ),
}


def fal_says(folder: Path, app: str, monkeypatch: pytest.MonkeyPatch) -> str | None:
    """fal's own parse of ``folder``'s pyproject: None when it accepts, else its message."""
    import fal.project
    from fal.cli._utils import get_app_data_from_toml

    monkeypatch.chdir(folder)
    fal.project.find_project_root.cache_clear()
    fal.project._load_toml.cache_clear()
    fal.project._cached_resolve.cache_clear()
    try:
        get_app_data_from_toml(app, emit_deprecation_warnings=False)
    except Exception as exc:
        return str(exc)
    return None


@pytest.mark.parametrize("case", sorted(CASES))
def test_validate_prints_fals_exact_message_and_exits_2(
    case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".git").mkdir()
    (tmp_path / "pyproject.toml").write_text(CASES[case])
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    expected = fal_says(tmp_path, "a", monkeypatch)
    assert expected, f"fal accepts the {case} case; the case is wrong"

    result = CliRunner().invoke(cli, ["config", "validate", "--project", str(tmp_path)])
    assert result.exit_code == 2, result.output
    first = result.stderr.splitlines()[0]
    assert first == f"error: {expected}"
    assert "Traceback" not in result.stderr


def test_example_is_accepted_by_fal_and_by_falemu(monkeypatch: pytest.MonkeyPatch) -> None:
    assert fal_says(EXAMPLE, "greeter", monkeypatch) is None
    result = CliRunner().invoke(cli, ["config", "validate", "--project", str(EXAMPLE)])
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
