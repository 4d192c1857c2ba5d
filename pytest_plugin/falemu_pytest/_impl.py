"""What the pytest plugin's fixtures and hooks do; imported only once a test needs falemu.

The plugin module itself (:mod:`falemu_pytest.plugin`) stays tiny because it loads in every pytest run
of the environment.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import pytest

from falemu_pytest.plugin import HANDLE, STATE

if TYPE_CHECKING:
    from falemu.testing import AppHandle, EmulatorHarness

_Key = tuple[str | None, tuple[tuple[str, Any], ...]]


class _State:
    """Everything the plugin holds for a session (kept in ``config.stash``)."""

    def __init__(self) -> None:
        self.harnesses: dict[_Key, EmulatorHarness] = {}
        self.failures: dict[_Key, str] = {}  # emulators that could not start, and why
        self.gpu_problem: str | None = None
        self.gpu_checked = False
        self.kept: list[str] = []


def state(config: pytest.Config) -> _State:
    found: _State | None = config.stash.get(STATE, None)
    if found is None:
        found = config.stash[STATE] = _State()
    return found


def option(config: pytest.Config, name: str) -> Any:
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


def harness(config: pytest.Config, app: str | None, overrides: dict[str, Any]) -> EmulatorHarness:
    """The started harness for (app, overrides); the plain one serves every app of the project."""
    key: _Key = (app if overrides else None, tuple(sorted(overrides.items())))
    held = state(config)
    if key not in held.failures and key not in held.harnesses:
        problem = _start_harness(config, held, key, app, overrides)
        if problem is not None:
            held.failures[key] = problem
    if key in held.failures:
        pytest.fail(held.failures[key], pytrace=False)
    return held.harnesses[key]


def _start_harness(
    config: pytest.Config, held: _State, key: _Key, app: str | None, overrides: dict[str, Any]
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
        started = EmulatorHarness(
            project,
            apps=[app] if overrides and app else None,
            runtime=option(config, "runtime"),
            keep_failed=True if option(config, "keep_failed") else None,  # else FALEMU_KEEP_FAILED / pyproject
            overrides={app: overrides} if overrides and app else None,
        )
        held.harnesses[key] = started
        _show_warnings(config, started)
        started.start()
    except FalemuError as exc:
        held.harnesses.pop(key, None)
        return f"falemu: {exc.message}" + (f" ({exc.hint})" if exc.hint else "")
    return None


def _show_warnings(config: pytest.Config, started: EmulatorHarness) -> None:
    """falemu's warnings (a server on another port than exposed_port, no GPU...) on the terminal as they
    come, as `falemu up` prints them: a start that waits out startup_timeout does not wait in silence.

    xdist workers print nothing (their output is not the terminal's)."""
    import contextlib

    from falemu.events import Notice

    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or hasattr(config, "workerinput"):
        return

    def show(event: Any) -> None:
        if isinstance(event, Notice) and event.level == "warning":
            about = f"{event.app}: " if event.app and event.app not in event.message else ""
            # past the test's output capture, as pytest's live logging writes
            suspended = capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext()
            with suspended:
                reporter.write_line(f"falemu: warning: {about}{event.message}", yellow=True)

    started.events.subscribe(show, kinds=[Notice])


def _marker_args(request: pytest.FixtureRequest) -> tuple[str | None, dict[str, Any]]:
    marker = request.node.get_closest_marker("falemu")
    kwargs = dict(marker.kwargs) if marker is not None else {}
    app = kwargs.pop("app", None)
    if app is None and marker is not None and marker.args:
        app = marker.args[0]
    if app is None:
        app = option(request.config, "app")
    return app, kwargs


def app_handle(request: pytest.FixtureRequest) -> AppHandle:
    from falemu.errors import FalemuError

    app, overrides = _marker_args(request)
    emulator = harness(request.config, app, overrides)
    problem = None
    try:
        handle = emulator.app(app)
    except FalemuError as exc:
        problem = f"falemu: {exc.message} ({exc.hint})"
    if problem is not None:
        pytest.fail(problem, pytrace=False)
    request.node.stash[HANDLE] = handle
    request.addfinalizer(handle.end_faults)  # faults a test injects end with it
    return handle


def session_harness(request: pytest.FixtureRequest) -> EmulatorHarness:
    return harness(request.config, None, {})


def fal_client_routed(request: pytest.FixtureRequest) -> Iterator[AppHandle]:
    from falemu.testing import fal_client_routed_to

    handle = app_handle(request)
    with fal_client_routed_to(handle.emulator):
        yield handle


def schema(request: pytest.FixtureRequest) -> Any:
    import schemathesis

    _schemathesis_nodeid_compat()
    handle = app_handle(request)
    loaded = schemathesis.openapi.from_dict(handle.openapi)
    auth = handle.client.headers.get("Authorization")
    loaded.config.update(base_url=handle.url, headers={"Authorization": auth} if auth else None)
    # As `falemu check`: valid input only; invalid input is a separate choice (GenerationMode.NEGATIVE).
    loaded.config.generation.update(modes=[schemathesis.GenerationMode.POSITIVE])
    return loaded


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


def gpu_problem(config: pytest.Config) -> str | None:
    """Why the engine cannot give runners a GPU; None when it can. Asked once per session."""
    held = state(config)
    if not held.gpu_checked:
        held.gpu_checked = True
        held.gpu_problem = _find_gpu_problem()
    return held.gpu_problem


def _find_gpu_problem() -> str | None:
    import os

    count = os.environ.get("FALEMU_GPU_COUNT", "").strip()
    if count.isdigit():
        return None if int(count) > 0 else "FALEMU_GPU_COUNT=0 says the engine has no GPU"
    try:
        import docker

        client = docker.from_env(timeout=10)
        try:
            info = client.info()
        finally:
            client.close()
    except Exception as exc:
        return f"no Docker engine answers ({type(exc).__name__}); start Docker on a GPU host"
    from falemu.runtime.gpu import detect_gpu_count

    runtimes = info.get("Runtimes") or {}
    if "nvidia" in runtimes or (detect_gpu_count(local_engine=True) or 0) > 0:
        return None
    return (
        "the Docker engine gives no GPU (no nvidia runtime, nvidia-smi finds none): install the NVIDIA "
        "Container Toolkit and restart dockerd, or set FALEMU_GPU_COUNT=<n> if the engine has GPUs"
    )


def keep_failed(item: pytest.Item) -> None:
    handle = item.stash.get(HANDLE, None)
    if handle is not None and (option(item.config, "keep_failed") or handle.emulator.settings.keep_failed):
        state(item.config).kept.extend(_keep_runners(handle, item.nodeid))


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


def write_report(config: pytest.Config) -> None:
    """``--falemu-report FILE``: the report of every emulator the session started, before they stop."""
    target = config.getoption("falemu_report", default=None)
    held: _State | None = config.stash.get(STATE, None)
    if not target or held is None:
        return
    from pathlib import Path

    from falemu.dashboard.report import combined, write

    boards = [h.emulator.dashboard.board for h in held.harnesses.values() if h.emulator.dashboard is not None]
    write(Path(target), combined(boards))


def stop_all(config: pytest.Config) -> None:
    """Stop every emulator the session started (each once, even when one fails to stop)."""
    held: _State | None = config.stash.get(STATE, None)
    if held is None:
        return
    import threading

    harnesses, held.harnesses = list(held.harnesses.values()), {}
    # Side by side: each waits out its runners' termination grace period, and pytest-xdist kills a
    # worker 10 s after asking it to stop, so one after another would leave the last ones behind.
    threads = [threading.Thread(target=_stop, args=(started,), daemon=True) for started in harnesses]
    with _no_interrupts():
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()


def _stop(started: EmulatorHarness) -> None:
    try:
        started.stop()
    except Exception as exc:  # teardown must reach every harness
        import sys

        sys.stderr.write(f"falemu: stopping an emulator failed: {type(exc).__name__}: {exc}\n")


@contextmanager
def _no_interrupts() -> Iterator[None]:
    """Hold off Ctrl-C while runners are removed: a second one (an impatient user, or pytest-xdist's
    worker shutdown, which interrupts a worker still busy after 5 s and kills it soon after) would
    otherwise leave the containers behind."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous if previous is not None else signal.SIG_DFL)
