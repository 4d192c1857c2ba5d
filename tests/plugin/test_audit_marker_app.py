"""Issue 5: the ``falemu`` marker and the ``falemu_app`` ini option *choose* the app (not only reject one).

A two-app project; the emulator is wired but not started (its start only parses the apps), so the
test checks which app and which scale settings each test's ``falemu_app`` handle got.
"""

from __future__ import annotations

import pytest

PYPROJECT = """\
[tool.fal.apps.first]
exposed_port = 8000
keep_alive = 30
image = { image = "first:1" }

[tool.fal.apps.second]
exposed_port = 8000
keep_alive = 40
image = { image = "second:1" }
"""

PARSE_ONLY = """
import pytest
import falemu.testing

@pytest.fixture(scope="session", autouse=True)
def _parse_only():
    start = falemu.testing.EmulatorHarness.start

    def parse(self):
        if self._emulator is None:
            from falemu.emulator import Emulator

            self._emulator = Emulator(self.project, self.settings, apps=self.apps, overrides=self.overrides)
            self._emulator._parse()
        return self

    falemu.testing.EmulatorHarness.start = parse
    yield
    falemu.testing.EmulatorHarness.start = start
"""

TESTS = """
import pytest

@pytest.mark.falemu(app="second")
def test_marker_app(falemu_app):
    assert falemu_app.name == "second"
    assert falemu_app.url.endswith("/local/second")
    assert falemu_app.config.scaling.keep_alive == 40

@pytest.mark.falemu("second", keep_alive=3, max_concurrency=5)
def test_marker_positional_app_and_overrides(falemu_app):
    assert falemu_app.name == "second"
    assert falemu_app.config.scaling.keep_alive == 3
    assert falemu_app.config.scaling.max_concurrency == 5

def test_ini_default_app(falemu_app):
    assert falemu_app.name == "first"
    assert falemu_app.config.scaling.keep_alive == 30
"""


def test_marker_and_ini_choose_the_app_and_overrides_apply(pytester: pytest.Pytester) -> None:
    (pytester.path / ".git").mkdir()
    (pytester.path / "pyproject.toml").write_text(PYPROJECT)
    pytester.makeini("[pytest]\nfalemu_app = first\n")
    pytester.makeconftest(PARSE_ONLY)
    pytester.makepyfile(TESTS)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)
