"""The Docker half of `falemu check` with a stand-in emulator: how start-up outcomes become checks."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from falemu.config.model import AppConfig, AppShape, Project, ScalingConfig
from falemu.config.settings import Settings
from falemu.contract.gate import GateOptions
from falemu.contract.lifecycle import _cold_start_check, _startup_check, check_app, config_report
from falemu.contract.results import AppReport
from falemu.errors import ImageError, RunnerError, StartupTimeout
from falemu.events import Notice

APP = AppConfig(name="a", alias="a", shape=AppShape.DIRECT_SERVER, project_root=Path("/x"), exposed_port=8000)


class FailingEmulator:
    """Raises ``error`` from start(), as Emulator.start does when the build or the first runner fails."""

    error: Exception = RuntimeError()

    def __init__(self, project: Any, settings: Any, **kwargs: Any) -> None:
        self.prepared: dict[str, Any] = {}
        self.stopped = False

    def start(self) -> None:
        raise self.error

    def stop(self) -> None:
        self.stopped = True


def run_with(error: Exception) -> AppReport:
    FailingEmulator.error = error
    report = AppReport(app="a")
    project = Project(root=Path("/x"), pyproject=Path("/x/pyproject.toml"), apps={"a": APP})
    check_app(project, Settings(), APP, report, GateOptions(), emulator_factory=FailingEmulator)
    return report


def statuses(report: AppReport) -> dict[str, str]:
    return {c.name: c.status for c in report.checks}


def test_loopback_server_fails_bind_and_names_0000() -> None:
    report = run_with(
        RunnerError(
            "the server listens on 127.0.0.1:8000 inside the container; fal needs 0.0.0.0",
            hint="bind the server to 0.0.0.0 (for example uvicorn --host 0.0.0.0)",
            logs="INFO: Uvicorn running on http://127.0.0.1:8000\n",
        )
    )
    status = statuses(report)
    assert status["bind"] == "failed"
    assert status["start"] == "failed"
    assert status["openapi.present"] == "skipped"
    bind = report.get("bind")
    assert bind is not None
    assert "fal needs 0.0.0.0" in bind.findings[0].message
    assert "Uvicorn running on http://127.0.0.1:8000" in bind.findings[0].detail
    assert bind.advice == ["bind the server to 0.0.0.0 (for example uvicorn --host 0.0.0.0)"]


def test_runner_that_exits_fails_start_only() -> None:
    report = run_with(RunnerError("runner a-1 of a exited with code 3 during start-up", hint="its last log line: boom"))
    status = statuses(report)
    assert status["start"] == "failed"
    assert status["bind"] == "skipped"
    assert status["startup_time"] == "skipped"


class WarningEmulator(FailingEmulator):
    """Warns on its event bus while it starts (as the runtime does for a server on another port), then times out."""

    def __init__(self, project: Any, settings: Any, **kwargs: Any) -> None:
        super().__init__(project, settings, **kwargs)
        self.events = kwargs["events"]

    def start(self) -> None:
        self.events(Notice("a", level="warning", message="runner a-1: the server listens on port 9000 inside ..."))
        self.events(Notice("a", level="info", message="an info line is not a warning"))
        raise StartupTimeout("runner a-1 of a was not ready within startup_timeout (5 s)")


def test_warnings_during_the_start_are_shown_as_they_come() -> None:
    shown: list[str] = []
    project = Project(root=Path("/x"), pyproject=Path("/x/pyproject.toml"), apps={"a": APP})
    report = AppReport(app="a")
    check_app(project, Settings(), APP, report, GateOptions(), progress=shown.append, emulator_factory=WarningEmulator)
    assert shown[1:] == ["warning: runner a-1: the server listens on port 9000 inside ..."]
    assert statuses(report)["start"] == "failed"


def test_startup_timeout_fails_startup_time() -> None:
    report = run_with(StartupTimeout("runner a-1 of a was not ready within startup_timeout (5 s)"))
    assert statuses(report)["startup_time"] == "failed"


def test_build_failure_skips_everything_after_it() -> None:
    report = run_with(ImageError("image build of a failed at step 2/5 (RUN false)", hint="fix the Dockerfile"))
    status = statuses(report)
    assert status["build"] == "failed"
    assert {s for name, s in status.items() if name != "build"} == {"skipped"}
    assert report.get("build").findings[0].message.startswith("image build of a failed")  # type: ignore[union-attr]


def test_startup_time_against_startup_timeout() -> None:
    app = dataclasses.replace(APP, scaling=ScalingConfig(startup_timeout=10))
    assert _startup_check(app, 2.0).status == "passed"
    warning = _startup_check(app, 9.0)
    assert warning.status == "warning"
    assert "90% of startup_timeout" in warning.advice[0]
    assert _startup_check(app, 12.0).status == "failed"
    assert _startup_check(app, None).status == "skipped"


class WarmEmulator:
    def expire_idle(self, app: str) -> None:
        raise AssertionError("min_concurrency > 0: nothing to expire")


def test_keep_alive_shorter_than_a_cold_start_gets_advice() -> None:
    from falemu.contract.lifecycle import AppRun

    app = dataclasses.replace(APP, scaling=ScalingConfig(keep_alive=2, min_concurrency=1))
    run = AppRun(startup_seconds=5.0)
    check = _cold_start_check(WarmEmulator(), app, run)  # type: ignore[arg-type]
    assert check.status == "warning"
    assert "keep_alive (2 s) is shorter than a cold start (5.0 s)" in check.advice[0]
    long = dataclasses.replace(app, scaling=ScalingConfig(keep_alive=300, min_concurrency=1))
    assert _cold_start_check(WarmEmulator(), long, run).status == "passed"  # type: ignore[arg-type]


def test_config_report_uses_fals_messages(tmp_path: Path) -> None:
    from falemu.config import load_project

    (tmp_path / "pyproject.toml").write_text(
        '[tool.fal.apps.good]\nexposed_port = 8000\nimage = { image = "x:1" }\n\n[tool.fal.apps.bad]\nimage = 1\n'
    )
    reports, apps = config_report(load_project(tmp_path), ["good", "bad"])
    assert [a.name for a in apps] == ["good"]
    assert reports[0].passed
    assert not reports[1].passed
    assert reports[1].checks[0].findings[0].message == "App bad image must be a table in pyproject.toml"


def test_other_start_errors_fail_start_with_their_hint() -> None:
    from falemu.errors import GpuUnavailable

    report = run_with(GpuUnavailable("GPU-H100 needs a GPU and the engine has none", hint="use --gpu auto"))
    start = report.get("start")
    assert start is not None
    assert start.status == "failed"
    assert start.findings[0].detail == "hint: use --gpu auto"
    assert [c.name for c in report.checks][-2:] == ["startup_time", "cold_start"]
