"""select_runtime: docker when an engine answers, else the process runtime with one notice."""

from __future__ import annotations

import pytest

from falemu.config.settings import Settings
from falemu.errors import EngineUnavailable
from falemu.events import EventBus, Notice
from falemu.runtime import select_runtime


def test_process_runtime_on_request():
    events = EventBus()
    runtime = select_runtime(Settings(runtime="process"), events)
    assert runtime.name == "process"
    assert events.history == []


def test_auto_falls_back_to_processes_with_one_notice(monkeypatch: pytest.MonkeyPatch, tmp_path):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-such.sock")
    events = EventBus()
    runtime = select_runtime(Settings(runtime="auto"), events)
    assert runtime.name == "process"
    (notice,) = events.history
    assert isinstance(notice, Notice)
    assert "no Docker engine answers" in notice.message
    assert "no image build" in notice.message
    assert "\n" not in notice.message


def test_docker_runtime_required_fails_without_engine(monkeypatch: pytest.MonkeyPatch, tmp_path):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-such.sock")
    with pytest.raises(EngineUnavailable) as info:
        select_runtime(Settings(runtime="docker"))
    assert f"{tmp_path}/no-such.sock" in info.value.message
    assert info.value.hint


def test_without_the_docker_package_auto_runs_processes_and_says_why(monkeypatch: pytest.MonkeyPatch, tmp_path):
    import sys

    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-such.sock")
    monkeypatch.setitem(sys.modules, "docker", None)  # `import docker` raises ImportError
    events = EventBus()
    runtime = select_runtime(Settings(runtime="auto"), events)
    assert runtime.name == "process"
    (notice,) = events.history
    assert "the docker package is not installed" in notice.message
