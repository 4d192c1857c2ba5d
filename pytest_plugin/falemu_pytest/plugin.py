"""pytest fixtures for testing fal apps against falemu.

::

    import pytest

    @pytest.mark.falemu(app="greeter", keep_alive=1)
    def test_greets(falemu_app):
        assert falemu_app.run("/greet", {"name": "fal"})["message"] == "Hello, fal."
        falemu_app.expire_idle()            # keep_alive runs out now; the next call is a cold start

    def test_client_code(fal_client_emulated):
        import fal_client
        assert fal_client.run("local/greeter/greet", arguments={"name": "x"})  # reaches the emulator

    schema = schemathesis.pytest.from_fixture("falemu_schema")

    @schema.parametrize()
    def test_contract(case):
        case.call_and_validate()

Fixtures: ``falemu`` (the session's :class:`falemu.testing.EmulatorHarness`), ``falemu_app`` (an
:class:`falemu.testing.AppHandle`), ``fal_client_emulated`` (the real ``fal_client`` routed to the
emulator), ``falemu_schema`` (a schemathesis schema of the running app). Markers: ``falemu(app=...,
**scale_overrides)`` and ``requires_gpu``. Options: ``--falemu-project``, ``--falemu-runtime``,
``--falemu-keep-failed``; ini ``falemu_project``, ``falemu_app``, ``falemu_runtime``,
``falemu_keep_failed``.

Loading this plugin costs an import of this module only: falemu, docker and schemathesis are imported
by the fixtures that need them, and nothing starts until a test asks for a fixture. Every emulator the
session started is stopped at the end of the session, also when it is interrupted.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from falemu.testing import AppHandle, EmulatorHarness

MARKERS = (
    "falemu(app=None, **overrides): the app falemu_app deploys (default: ini falemu_app, else the project's only "
    "app) and scale settings to override for this test (keep_alive=1, min_concurrency=1, ...)",
    "requires_gpu: skip unless the Docker engine can give runners a GPU",
)

_Key = tuple[str | None, tuple[tuple[str, Any], ...]]


class _State:
    """Everything the plugin holds for a session (kept in ``config.stash``)."""

    def __init__(self) -> None:
        self.harnesses: dict[_Key, EmulatorHarness] = {}
        self.failures: dict[_Key, str] = {}  # emulators that could not start, and why
        self.gpu_problem: str | None = None
        self.gpu_checked = False
        self.kept: list[str] = []


_STATE = pytest.StashKey[_State]()


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
    parser.addini("falemu_project", "Project folder or pyproject.toml (default: discovered from the rootdir).")
    parser.addini("falemu_app", "The app falemu_app deploys when the marker names none.")
    parser.addini("falemu_runtime", "auto, docker or process.")
    keep_help = "Keep the runner containers of failed tests."
    parser.addini("falemu_keep_failed", keep_help, type="bool", default=False)  # type: ignore[maybe-unrecognized-str-typeform]


def pytest_configure(config: pytest.Config) -> None:
    for line in MARKERS:
        config.addinivalue_line("markers", line)
    config.stash[_STATE] = _State()


def _state(config: pytest.Config) -> _State:
    state = config.stash.get(_STATE, None)
    if state is None:
        state = config.stash[_STATE] = _State()
    return state


def _option(config: pytest.Config, name: str) -> Any:
    value = config.getoption(f"falemu_{name}", default=None)
    if value is None or value == "":
        value = config.getini(f"falemu_{name}")
    return value if value not in ("", None) else None


def _project(config: pytest.Config) -> str:
    """--falemu-project (relative to the invocation folder), ini falemu_project (relative to the ini file),
    else the rootdir, from which the pyproject is found as fal finds it."""
    from pathlib import Path

    given = config.getoption("falemu_project", default=None)
    if given:
        return str(Path(given))
    ini = config.getini("falemu_project")
    if ini:
        base = config.inipath.parent if config.inipath is not None else config.rootpath
        return str(base / str(ini))
    return str(config.rootpath)


def _harness(config: pytest.Config, app: str | None, overrides: dict[str, Any]) -> EmulatorHarness:
    """The started harness for (app, overrides); the plain one serves every app of the project."""
    key: _Key = (app if overrides else None, tuple(sorted(overrides.items())))
    state = _state(config)
    if key not in state.failures and key not in state.harnesses:
        problem = _start_harness(config, state, key, app, overrides)
        if problem is not None:
            state.failures[key] = problem
    if key in state.failures:
        pytest.fail(state.failures[key], pytrace=False)
    return state.harnesses[key]


def _start_harness(
    config: pytest.Config, state: _State, key: _Key, app: str | None, overrides: dict[str, Any]
) -> str | None:
    """Start the harness for ``key``; the failure message when it cannot start."""
    from falemu.config import load_project
    from falemu.errors import FalemuError
    from falemu.testing import EmulatorHarness

    try:
        project = load_project(_project(config))
        names = project.app_names
        if overrides and app is None:
            if len(names) != 1:
                return (
                    f"falemu: the falemu marker sets {', '.join(sorted(overrides))} but names no app, and "
                    f"{project.pyproject} has {len(names)}: add app=... to the marker"
                )
            app = names[0]
        if app is not None and app not in names:
            return f"falemu: App {app} not found in pyproject.toml (apps in {project.pyproject}: {', '.join(names)})"
        harness = EmulatorHarness(
            project,
            apps=[app] if overrides and app else None,
            runtime=_option(config, "runtime"),
            keep_failed=True if _option(config, "keep_failed") else None,  # else FALEMU_KEEP_FAILED / pyproject
            overrides={app: overrides} if overrides and app else None,
        )
        state.harnesses[key] = harness
        harness.start()
    except FalemuError as exc:
        state.harnesses.pop(key, None)
        return f"falemu: {exc.message}" + (f" ({exc.hint})" if exc.hint else "")
    return None


def _marker_args(request: pytest.FixtureRequest) -> tuple[str | None, dict[str, Any]]:
    marker = request.node.get_closest_marker("falemu")
    kwargs = dict(marker.kwargs) if marker is not None else {}
    app = kwargs.pop("app", None)
    if app is None and marker is not None and marker.args:
        app = marker.args[0]
    if app is None:
        app = _option(request.config, "app")
    return app, kwargs


def _app_handle(request: pytest.FixtureRequest) -> AppHandle:
    from falemu.errors import FalemuError

    app, overrides = _marker_args(request)
    harness = _harness(request.config, app, overrides)
    problem = None
    try:
        handle = harness.app(app)
    except FalemuError as exc:
        problem = f"falemu: {exc.message} ({exc.hint})"
    if problem is not None:
        pytest.fail(problem, pytrace=False)
    request.node.stash[_HANDLE] = handle
    return handle


_HANDLE = pytest.StashKey[Any]()  # the test's AppHandle


@pytest.fixture(scope="session")
def falemu(request: pytest.FixtureRequest) -> EmulatorHarness:
    """The session's emulator (a started :class:`falemu.testing.EmulatorHarness`) for the project's apps.

    ``falemu.emulator`` is the :class:`falemu.emulator.Emulator`; ``falemu.app(name)`` a handle.
    """
    return _harness(request.config, None, {})


@pytest.fixture
def falemu_app(request: pytest.FixtureRequest) -> AppHandle:
    """The app the ``falemu`` marker (or ini ``falemu_app``) names, deployed: ``.url``, ``.client``,
    ``.run()``, ``.submit()``, ``.runners``, ``.logs()``, ``.events``, ``.openapi``, ``.expire_idle()``."""
    return _app_handle(request)


@pytest.fixture
def fal_client_emulated(request: pytest.FixtureRequest) -> Iterator[AppHandle]:
    """The real ``fal_client`` routed to the emulator: ``fal_client.run("<owner>/<app>", ...)`` and the queue
    calls reach falemu's gateway, with ``FAL_KEY`` set to its key. Yields the app's handle."""
    from falemu.testing import fal_client_routed_to

    handle = _app_handle(request)
    with fal_client_routed_to(handle.emulator):
        yield handle


@pytest.fixture
def falemu_schema(request: pytest.FixtureRequest) -> Any:
    """A schemathesis schema of the running app, loaded when the test runs (not at collection)::

    schema = schemathesis.pytest.from_fixture("falemu_schema")

    Requests go through the gateway with the emulator's key; cases are valid input only, as in
    ``falemu check`` (``schema.config.generation.update(modes=[...])`` changes that).
    """
    import schemathesis

    _schemathesis_nodeid_compat()
    handle = _app_handle(request)
    schema = schemathesis.openapi.from_dict(handle.openapi)
    auth = handle.client.headers.get("Authorization")
    schema.config.update(base_url=handle.url, headers={"Authorization": auth} if auth else None)
    # As `falemu check`: valid input only; invalid input is a separate choice (GenerationMode.NEGATIVE).
    schema.config.generation.update(modes=[schemathesis.GenerationMode.POSITIVE])
    return schema


def _schemathesis_nodeid_compat() -> None:
    """Lazy schemathesis schemas (4.32) read and write ``item._nodeid``, which pytest 9.2 no longer has.

    Items get a ``_nodeid`` that reads the node id and keeps what schemathesis writes (its per-operation
    labels); nothing changes on pytest versions that still have the attribute.
    """
    if hasattr(pytest.Item, "_nodeid"):
        return

    def get(self: pytest.Item) -> str:
        value = self.__dict__.get("_falemu_nodeid")
        return str(value) if value is not None else self.nodeid

    def put(self: pytest.Item, value: str) -> None:
        self.__dict__["_falemu_nodeid"] = value

    pytest.Item._nodeid = property(get, put)  # type: ignore[attr-defined]


# -- markers and hooks ------------------------------------------------------------------------------


def _gpu_problem(config: pytest.Config) -> str | None:
    state = _state(config)
    if state.gpu_checked:
        return state.gpu_problem
    state.gpu_checked = True
    import os

    count = os.environ.get("FALEMU_GPU_COUNT", "").strip()
    if count.isdigit():
        state.gpu_problem = None if int(count) > 0 else "FALEMU_GPU_COUNT=0 says the engine has no GPU"
        return state.gpu_problem
    try:
        import docker

        client = docker.from_env(timeout=10)
        try:
            info = client.info()
        finally:
            client.close()
    except Exception as exc:
        state.gpu_problem = f"no Docker engine answers ({type(exc).__name__}); start Docker on a GPU host"
        return state.gpu_problem
    from falemu.runtime.gpu import detect_gpu_count

    runtimes = info.get("Runtimes") or {}
    if "nvidia" in runtimes or (detect_gpu_count(local_engine=True) or 0) > 0:
        state.gpu_problem = None
    else:
        state.gpu_problem = (
            "the Docker engine gives no GPU (no nvidia runtime, nvidia-smi finds none): install the NVIDIA "
            "Container Toolkit and restart dockerd, or set FALEMU_GPU_COUNT=<n> if the engine has GPUs"
        )
    return state.gpu_problem


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("requires_gpu") is None:
        return
    problem = _gpu_problem(item.config)
    if problem:
        pytest.skip(f"requires_gpu: {problem}")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report: Any = yield
    if report.failed and report.when == "call":
        handle = item.stash.get(_HANDLE, None)
        if handle is not None and (_option(item.config, "keep_failed") or handle.emulator.settings.keep_failed):
            _state(item.config).kept.extend(_keep_runners(handle, item.nodeid))
    return report  # type: ignore[no-any-return]


def _keep_runners(handle: AppHandle, nodeid: str) -> list[str]:
    """Detach the app's runner containers from the runtime so the teardown leaves them running."""
    kept: list[str] = []
    runtime = handle.emulator.runtime
    runners = getattr(runtime, "runners", None)
    if not callable(runners):
        return kept
    for runner in runners():
        if runner.app != handle.alias:
            continue
        name = getattr(runner.handle, "name", None) or getattr(runner.handle, "id", None)
        if name is None:
            continue
        runner.handle = _Kept(str(name), nodeid)
        kept.append(f"{name} ({nodeid})")
    return kept


class _Kept:
    """Stands in for a kept runner's runtime handle: the runtime no longer stops or removes it."""

    def __init__(self, name: str, nodeid: str) -> None:
        self.name = name
        self.nodeid = nodeid


def _stop_all(config: pytest.Config) -> None:
    state = config.stash.get(_STATE, None)
    if state is None:
        return
    harnesses, state.harnesses = list(state.harnesses.values()), {}
    for harness in harnesses:
        try:
            harness.stop()
        except Exception as exc:  # teardown must reach every harness
            import sys

            sys.stderr.write(f"falemu: stopping an emulator failed: {type(exc).__name__}: {exc}\n")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _stop_all(session.config)


def pytest_unconfigure(config: pytest.Config) -> None:
    _stop_all(config)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    state = config.stash.get(_STATE, None)
    if state is None or not state.kept:
        return
    terminalreporter.section("falemu kept runners")
    for line in state.kept:
        terminalreporter.line(f"kept {line}: inspect with docker logs / docker exec; `falemu down` removes it")
