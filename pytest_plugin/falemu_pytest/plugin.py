"""pytest fixtures for testing fal apps against falemu.

::

    @pytest.mark.falemu(app="greeter", keep_alive=1)
    def test_greets(falemu_app):
        assert falemu_app.run("/greet", {"name": "fal"})["message"] == "Hello, fal."
        falemu_app.expire_idle()            # keep_alive runs out now; the next call is a cold start

    def test_client_code(fal_client_emulated):
        assert fal_client.run("local/greeter/greet", arguments={"name": "x"})  # answered by falemu

    schema = schemathesis.pytest.from_fixture("falemu_schema")

Fixtures: ``falemu`` (the session's :class:`falemu.testing.EmulatorHarness`), ``falemu_app`` (an
:class:`falemu.testing.AppHandle`), ``fal_client_emulated``, ``falemu_schema``. Markers:
``falemu(app=..., **scale_overrides)`` and ``requires_gpu``. Options ``--falemu-project``,
``--falemu-runtime``, ``--falemu-keep-failed``, ``--falemu-report FILE``; ini ``falemu_project``, ``falemu_app``,
``falemu_runtime``, ``falemu_keep_failed``.

This module loads in every pytest run of the environment, so it imports only pytest; the work is in
:mod:`falemu_pytest._impl`, imported when a test first asks for a fixture. Nothing starts before that,
and every emulator the session started stops at its end, also when the run is interrupted.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

STATE = pytest.StashKey[Any]()  # the session's falemu_pytest._impl._State, once a fixture made one
HANDLE = pytest.StashKey[Any]()  # a test's AppHandle

MARKERS = (
    "falemu(app=None, **overrides): the app falemu_app deploys (default: ini falemu_app, else the project's only "
    "app) and scale settings to override for this test (keep_alive=1, min_concurrency=1, ...)",
    "requires_gpu: skip unless the Docker engine can give runners a GPU",
)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("falemu", "falemu: fal apps on a local emulator")
    group.addoption("--falemu-project", default=None, help="Project folder or pyproject.toml with [tool.fal.apps].")
    group.addoption("--falemu-runtime", default=None, choices=("auto", "docker", "process"), help="Where runners run.")
    group.addoption(
        "--falemu-keep-failed",
        action="store_true",
        default=None,
        help="Keep the runner containers of failed tests for inspection (falemu down removes them).",
    )
    group.addoption(
        "--falemu-report",
        default=None,
        metavar="FILE",
        help="Write the session's falemu report (analytics, errors, cost, keep_alive advisor): JSON for *.json, "
        "else HTML.",
    )
    parser.addini("falemu_project", "Project folder or pyproject.toml (default: discovered from the rootdir).")
    parser.addini("falemu_app", "The app falemu_app deploys when the marker names none.")
    parser.addini("falemu_runtime", "auto, docker or process.")
    keep_help = "Keep the runner containers of failed tests."
    parser.addini("falemu_keep_failed", keep_help, type="bool", default=False)  # type: ignore[maybe-unrecognized-str-typeform]


def pytest_configure(config: pytest.Config) -> None:
    for line in MARKERS:
        config.addinivalue_line("markers", line)


@pytest.fixture(scope="session")
def falemu(request: pytest.FixtureRequest) -> Any:
    """The session's emulator for the project's apps, started on first use.

    A :class:`falemu.testing.EmulatorHarness`: ``.emulator`` is the Emulator, ``.app(name)`` a handle.
    """
    from falemu_pytest import _impl

    return _impl.session_harness(request)


@pytest.fixture
def falemu_app(request: pytest.FixtureRequest) -> Any:
    """The app the ``falemu`` marker (or ini ``falemu_app``) names, deployed: ``.url``, ``.client``,
    ``.run()``, ``.submit()``, ``.runners``, ``.logs()``, ``.events``, ``.openapi``, ``.expire_idle()``,
    ``.faults`` (fault injection; what a test adds is cleared when it ends)."""
    from falemu_pytest import _impl

    return _impl.app_handle(request)


@pytest.fixture
def fal_client_emulated(request: pytest.FixtureRequest) -> Iterator[Any]:
    """The real ``fal_client`` routed to the emulator: ``fal_client.run("<owner>/<app>", ...)`` and the queue
    calls reach falemu's gateway with ``FAL_KEY`` set to its key. Yields the app's handle."""
    from falemu_pytest import _impl

    yield from _impl.fal_client_routed(request)


@pytest.fixture
def falemu_schema(request: pytest.FixtureRequest) -> Any:
    """A schemathesis schema of the running app, loaded when the test runs (not at collection)::

        schema = schemathesis.pytest.from_fixture("falemu_schema")

    Requests go through the gateway with the emulator's key; cases are valid input only, as in
    ``falemu check`` (``schema.config.generation.update(modes=[...])`` changes that).
    """
    from falemu_pytest import _impl

    return _impl.schema(request)


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("requires_gpu") is None:
        return
    from falemu_pytest import _impl

    problem = _impl.gpu_problem(item.config)
    if problem:
        pytest.skip(f"requires_gpu: {problem}")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report: Any = yield
    if report.failed and report.when == "call" and HANDLE in item.stash:
        from falemu_pytest import _impl

        _impl.keep_failed(item)
    return report  # type: ignore[no-any-return]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if STATE in session.config.stash:
        from falemu_pytest import _impl

        _impl.write_report(session.config)
        _impl.stop_all(session.config)


def pytest_unconfigure(config: pytest.Config) -> None:
    if STATE in config.stash:
        from falemu_pytest import _impl

        _impl.stop_all(config)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    kept = getattr(config.stash.get(STATE, None), "kept", None)
    if not kept:
        return
    terminalreporter.section("falemu kept runners")
    for line in kept:
        terminalreporter.line(f"kept {line}: inspect with docker logs / docker exec; `falemu down` removes it")
