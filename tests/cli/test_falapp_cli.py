"""fal.App refs on the command line: `falemu config show`, and the one-line errors of `up` and `check`.

No Docker: loading happens before any image is built. The loader is fal 1.83.0's own, run in a
subprocess, so these tests also show that an app that raises at import never takes falemu down.
"""

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
APPS = ROOT / "tests" / "apps" / "falapp"


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def _sources(output: str) -> dict[str, tuple[str, str]]:
    """``key -> (value, source)`` from the text of `falemu config show`."""
    found: dict[str, tuple[str, str]] = {}
    for line in output.splitlines()[1:]:
        key, _, rest = line.strip().partition("  ")
        value, _, source = rest.strip().rpartition("  (")
        found[key] = (value.strip(), source.rstrip(")"))
    return found


def test_config_show_names_the_class_the_pyproject_and_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(APPS)
    result = run("config", "show", "overridden")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"[tool.fal.apps.overridden] in {APPS / 'pyproject.toml'}")
    values = _sources(result.stdout)
    assert values["keep_alive"] == ("2", "class")  # a class kwarg beats the pyproject's 7
    assert values["max_concurrency"] == ("2", "class")  # ... and its 5
    assert values["max_multiplexing"] == ("1", "class")  # a class variable
    assert values["request_timeout"] == ("30", "class")
    assert values["machine_type"] == ('["GPU-H100", "GPU-A100"]', "pyproject")  # replaces fal.App's default S
    assert values["min_concurrency"] == ("1", "pyproject")
    assert values["startup_timeout"] == ("600", "default")
    assert values["alias"] == ("overridden", "pyproject")
    assert values["requirements"] == ('["pillow", "websockets", "msgpack"]', "class")
    assert values["fal_app.endpoints"] == ('["/echo", "/realtime", "/ws"]', "class")


def test_config_show_of_a_ref_is_the_class_alone_as_fal_run_loads_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(APPS)
    result = run("config", "show", "apps.py::Lifecycle", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    values = report["values"]
    assert values["alias"] == {"value": "lifecycle", "source": "derived"}  # fal's kebab-case of the class name
    assert values["keep_alive"] == {"value": 2, "source": "class"}
    assert values["machine_type"] == {"value": ["S"], "source": "default"}  # fal.App's default
    assert values["min_concurrency"] == {"value": 0, "source": "default"}
    assert values["exposed_port"] == {"value": 8080, "source": "default"}
    assert values["fal_app.serve_requirements"]["value"][:3] == [
        f"fastapi=={_version('fastapi')}",
        f"pydantic=={_version('pydantic')}",
        f"tblib=={_version('tblib')}",
    ]


def _version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


@pytest.mark.parametrize(
    ("files", "ref", "message", "hint"),
    [
        ({}, "missing.py::App", "ref file missing.py does not exist", "a ref is path/to/app.py::ClassName"),
        (
            {"app.py": "import fal\n"},
            "app.py::Nope",
            "Function 'Nope' not found in module (app.py::Nope)",
            "a ref names a fal.App class of the file",
        ),
        (
            {"app.py": "import fal\nclass Plain:\n    pass\n"},
            "app.py::Plain",
            "Function 'Plain' is not a fal.App or a fal.function (app.py::Plain)",
            "a ref names a fal.App class",
        ),
        (
            {"app.py": "import fal\n\n\nsettings = {}\nmodel = settings['model']\n"},
            "app.py::App",
            "loading app.py failed: KeyError: 'model'",
            "app.py, line 5: model = settings['model']",
        ),
        (
            {"app.py": "import fal\nimport falemu_no_such_module\n"},
            "app.py::App",
            "loading app.py failed: ModuleNotFoundError: No module named 'falemu_no_such_module'",
            "its top-level imports must be installed here too",
        ),
        (
            {
                "app.py": "import fal\nclass App(fal.App, keep_alive_typo=3):\n"
                "    @fal.endpoint('/')\n    def f(self) -> dict:\n        return {}\n"
            },
            "app.py::App",
            "loading app.py failed: ValueError: Unrecognised option 'keep_alive_typo'. Did you mean 'keep_alive'?",
            "fal's loader",
        ),
    ],
    ids=["missing-file", "missing-class", "not-an-app", "raises-at-import", "missing-import", "bad-kwarg"],
)
def test_bad_refs_are_one_line_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, files: dict[str, str], ref: str, message: str, hint: str
) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    (tmp_path / ".git").mkdir()  # the project root: no pyproject needed for a ref
    monkeypatch.chdir(tmp_path)
    commands: list[tuple[str, ...]] = [("config", "show", ref)]
    if "::Nope" in ref or "KeyError" in message:  # up and check load refs the same way: two cases suffice
        commands += [("up", ref, "--port", "0"), ("check", ref)]
    for command in commands:
        result = run(*command)
        assert result.exit_code == 2, (command, result.output)
        lines = result.stderr.splitlines()
        assert lines[0] == f"error: {message}", command
        assert lines[1].startswith("hint: ")
        assert hint in lines[1]
        assert len(lines) == 2
        assert "Traceback" not in result.output


def test_without_fal_on_the_host_the_error_names_the_extra(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text("import fal\n")
    code = (
        "import sys; sys.modules['fal'] = None\n"  # as if fal were not installed
        "from falemu.cli import main\n"
        "main(['config', 'show', 'app.py::App'])\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "pytest_plugin")])}
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        "error: fal.App apps need the fal SDK on this machine, and it is not installed",
        "hint: install the fal SDK next to falemu: pip install 'falemu[fal]'",
    ]
