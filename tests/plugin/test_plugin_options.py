"""The plugin's markers, options and failure messages: everything that needs no Docker engine."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "direct-server"


def test_markers_are_registered(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--markers", "-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(["@pytest.mark.falemu(app=None, **overrides):*", "@pytest.mark.requires_gpu:*"])


def test_options_and_ini_are_documented(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--help", "-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(
        [
            "*--falemu-project=FALEMU_PROJECT*",
            "*--falemu-runtime=*",
            "*--falemu-keep-failed*",
            "*falemu_project (string)*",
            "*falemu_app (string)*",
            "*falemu_runtime (string)*",
            "*falemu_keep_failed (bool)*",
        ]
    )
    assert result.ret == 0


def test_strict_markers_accept_the_markers(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.falemu(app="x", keep_alive=1)
        def test_marked():
            pass
        """
    )
    pytester.runpytest("--strict-markers", "-p", "no:cacheprovider").assert_outcomes(passed=1)


def test_unused_plugin_imports_and_starts_nothing(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import sys

        def test_nothing_loaded():
            assert "falemu_pytest.plugin" in sys.modules
            loaded = sorted(m for m in sys.modules if m == "falemu" or m.startswith(("falemu.", "docker")))
            assert loaded == []
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_requires_gpu_skips_with_an_actionable_reason(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FALEMU_GPU_COUNT", "0")
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.requires_gpu
        def test_on_gpu():
            pass

        def test_on_cpu():
            pass
        """
    )
    result = pytester.runpytest("-rs", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["*requires_gpu: FALEMU_GPU_COUNT=0 says the engine has no GPU*"])


def test_requires_gpu_runs_when_the_engine_has_gpus(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FALEMU_GPU_COUNT", "2")
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.requires_gpu
        def test_on_gpu():
            pass
        """
    )
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)


def test_requires_gpu_without_override_asks_the_engine(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FALEMU_GPU_COUNT", raising=False)
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.requires_gpu
        def test_on_gpu():
            pass
        """
    )
    result = pytester.runpytest("-rs", "-p", "no:cacheprovider")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*requires_gpu: no Docker engine answers*"])


def test_missing_project_fails_the_test_without_a_traceback(pytester: pytest.Pytester) -> None:
    (pytester.path / ".git").mkdir()  # stop fal's upward search here
    pytester.makepyfile("def test_app(falemu_app):\n    pass\n")
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*falemu: No pyproject.toml file found.*"])
    result.stdout.no_fnmatch_line("*Traceback*")


def test_unknown_app_and_unknown_override_are_reported(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.falemu(app="nope")
        def test_unknown_app(falemu_app):
            pass

        @pytest.mark.falemu(app="greeter", keep_alvie=1)
        def test_typo(falemu_app):
            pass

        @pytest.mark.falemu(app="greeter", max_concurrency="lots")
        def test_not_a_number(falemu_app):
            pass
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider", f"--falemu-project={EXAMPLE}")
    result.assert_outcomes(errors=3)
    result.stdout.fnmatch_lines(
        [
            "*falemu: App nope not found in pyproject.toml*",
            "*unknown scaling setting(s) for greeter: keep_alvie*",
            "*falemu: scaling setting max_concurrency for greeter must be a number of at least 0, got 'lots'*",
        ]
    )
    result.stdout.no_fnmatch_line("*TypeError*")


def test_ini_default_app_is_used(pytester: pytest.Pytester) -> None:
    pytester.makeini(f"[pytest]\nfalemu_app = other\nfalemu_project = {EXAMPLE}\n")
    pytester.makepyfile("def test_app(falemu_app):\n    pass\n")
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*falemu: *other*"])


NO_START = """
import pytest
import falemu.testing

@pytest.fixture(scope="session", autouse=True)
def _wiring_only():
    start = falemu.testing.EmulatorHarness.start
    falemu.testing.EmulatorHarness.start = lambda self: self  # nothing starts
    yield
    falemu.testing.EmulatorHarness.start = start
"""

SETTINGS_TEST = """
def test_settings(falemu):
    import json, os
    s = falemu.settings
    print("SETTINGS", json.dumps({"runtime": s.runtime, "keep_failed": s.keep_failed, "port": s.port,
                                  "pyproject": str(falemu.project.pyproject)}))
"""


def _settings(result: pytest.RunResult) -> dict[str, object]:
    import json

    line = next(line for line in result.stdout.lines if "SETTINGS " in line)
    data: dict[str, object] = json.loads(line.split("SETTINGS ", 1)[1].rsplit("}", 1)[0] + "}")
    return data


def test_ini_options_reach_the_emulator(pytester: pytest.Pytester) -> None:
    (pytester.path / "proj").mkdir()
    (pytester.path / "proj" / "pyproject.toml").write_text((EXAMPLE / "pyproject.toml").read_text())
    pytester.makeini("[pytest]\nfalemu_project = proj\nfalemu_runtime = process\nfalemu_keep_failed = true\n")
    pytester.makeconftest(NO_START)
    pytester.makepyfile(SETTINGS_TEST)
    result = pytester.runpytest("-p", "no:cacheprovider", "-s")
    result.assert_outcomes(passed=1)
    assert _settings(result) == {
        "runtime": "process",
        "keep_failed": True,
        "port": 0,  # a free port: sessions never collide
        "pyproject": str(pytester.path / "proj" / "pyproject.toml"),
    }


def test_command_line_options_win_over_ini(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FALEMU_KEEP_FAILED", raising=False)
    pytester.makeini("[pytest]\nfalemu_project = nowhere\nfalemu_runtime = process\n")
    pytester.makeconftest(NO_START)
    pytester.makepyfile(SETTINGS_TEST)
    result = pytester.runpytest(
        "-p", "no:cacheprovider", "-s", f"--falemu-project={EXAMPLE}", "--falemu-runtime=docker", "--falemu-keep-failed"
    )
    result.assert_outcomes(passed=1)
    settings = _settings(result)
    assert settings["runtime"] == "docker"
    assert settings["keep_failed"] is True
    assert settings["pyproject"] == str(EXAMPLE / "pyproject.toml")


def test_keep_failed_defaults_to_falemus_own_setting(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FALEMU_KEEP_FAILED", "1")
    pytester.makeconftest(NO_START)
    pytester.makepyfile(SETTINGS_TEST)
    result = pytester.runpytest("-p", "no:cacheprovider", "-s", f"--falemu-project={EXAMPLE}")
    result.assert_outcomes(passed=1)
    assert _settings(result)["keep_failed"] is True


def test_overrides_without_an_app_need_one_in_a_multi_app_project(pytester: pytest.Pytester) -> None:
    (pytester.path / "pyproject.toml").write_text(
        '[tool.fal.apps.a]\nimage = { image = "x:1" }\n\n[tool.fal.apps.b]\nimage = { image = "x:1" }\n'
    )
    (pytester.path / ".git").mkdir()
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.falemu(keep_alive=1)
        def test_which(falemu_app):
            pass
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*falemu: the falemu marker sets keep_alive but names no app*add app=...*"])
