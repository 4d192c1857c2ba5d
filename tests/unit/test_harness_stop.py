"""EmulatorHarness.stop() also stops an emulator whose start() was cut short (Ctrl-C while starting)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import pytest

import falemu.emulator
from falemu.testing import EmulatorHarness

PYPROJECT = """
[tool.fal.apps.echo]
exposed_port = 8000
[tool.fal.apps.echo.image]
dockerfile = "Dockerfile"
"""


class _Emulator:
    """Starts until interrupted; its own clean-up is cut short by the next Ctrl-C (stopped stays 0)."""

    made: ClassVar[list[_Emulator]] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.stopped = 0
        self.made.append(self)

    def start(self) -> None:
        raise KeyboardInterrupt

    def stop(self) -> None:
        self.stopped += 1


def test_stop_finishes_a_start_cut_short(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "pyproject.toml").write_text(PYPROJECT)
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    monkeypatch.setattr(falemu.emulator, "Emulator", _Emulator)
    harness = EmulatorHarness(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        harness.start()
    assert not harness.started
    harness.stop()
    assert [e.stopped for e in _Emulator.made] == [1]
    harness.stop()  # once only
    assert [e.stopped for e in _Emulator.made] == [1]
