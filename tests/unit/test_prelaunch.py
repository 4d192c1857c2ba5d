"""The launch plan's logic (falemu.prelaunch) with a stand-in for the engine's two calls.

The real path (the real ``falemu up`` twice on the real engine) is tests/integration/test_prelaunch_docker.py.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from falemu import names, prelaunch
from falemu.config.model import AppConfig, AppShape, ImageConfig

ARGV = ["falemu", "up", "--port", "0"]
SOCKET = "/run/engine.sock"


class Engine:
    """What early() asked of the engine: each call's method, target and body."""

    def __init__(self, create_status: int = 201) -> None:
        self.calls: list[tuple[str, str, Any]] = []
        self.create_status = create_status

    def __call__(self, method: str, target: str, body: bytes = b"") -> tuple[int, bytes]:
        self.calls.append((method, target, json.loads(body) if body else None))
        if target.endswith("/start"):
            return 204, b""
        if "/containers/create" in target:
            return self.create_status, b'{"Id": "c0ffee"}'
        return 204, b""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    sigterm = signal.getsignal(signal.SIGTERM)  # early() takes it over until `falemu up` installs its own
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(prelaunch, "_state", prelaunch._State())
    monkeypatch.setattr("atexit.register", lambda *args: None)
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "pyproject.toml").write_text("[tool.fal.apps.app]\n")
    monkeypatch.chdir(folder)
    yield folder
    signal.signal(signal.SIGTERM, sigterm)


def request(runner_id: str, api_dir: str) -> dict[str, Any]:
    """A create request as the runtime writes it, for ``runner_id`` of this process."""
    return {
        "Image": "falemu/app:1234",
        "Env": [f"FAL_RUNNER_ID={runner_id}", f"FAL_JOB_ID={runner_id}", "FAL_KEY=k"],
        "Labels": {
            "falemu.runner": runner_id,
            "falemu.owner": names.owner_label(),
            "falemu.owner-started": names.process_start_time(os.getpid()),
        },
        "HostConfig": {"Binds": [f"{api_dir}:/run/fal:rw"]},
    }


def planned_run(project: Path, *, alias: str = "app", argv: list[str] = ARGV) -> Path:
    """A `falemu up` that recorded its runner's request and saved its plan; the uploader folder it used."""
    prelaunch._state.key = prelaunch.plan_key(argv, os.getcwd(), os.environ)
    api_dir = project.parent / f"{prelaunch.API_DIR_PREFIX}first"
    api_dir.mkdir()
    prelaunch.record(alias, f"{alias}-1a2b", request(f"{alias}-1a2b", str(api_dir)), SOCKET, "/v1.45")
    config = AppConfig(
        name=alias,
        alias=alias,
        shape=AppShape.DIRECT_SERVER,
        project_root=project,
        pyproject=project / "pyproject.toml",
    )
    assert prelaunch.save([config], api_dir)
    prelaunch._state = prelaunch._State()  # the next process
    return api_dir


def planned_context_run(project: Path) -> bool:
    """A `falemu up` of a direct app built from ``project`` (its Dockerfile and context) that saved its plan."""
    image = ImageConfig(dockerfile=project / "Dockerfile", context_dir=project)
    config = AppConfig(name="app", alias="app", shape=AppShape.DIRECT_SERVER, project_root=project, image=image)
    prelaunch._state.key = prelaunch.plan_key(ARGV, os.getcwd(), os.environ)
    prelaunch.record("app", "app-1a2b", request("app-1a2b", "/tmp/x"), SOCKET, "")
    return prelaunch.save([config], None)


def next_process(monkeypatch: pytest.MonkeyPatch) -> Engine:
    """A fresh process's early-launch state, with a stand-in engine."""
    prelaunch._state = prelaunch._State()
    engine = Engine()
    monkeypatch.setattr(prelaunch, "_call", engine)
    return engine


def test_a_plan_replays_the_recorded_request_with_this_runs_names(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first_dir = planned_run(project)
    engine = Engine()
    monkeypatch.setattr(prelaunch, "_call", engine)

    prelaunch.early(ARGV)

    runner_id = prelaunch.take_runner_id("app")
    assert runner_id is not None
    assert runner_id != "app-1a2b"
    assert prelaunch.take_runner_id("app") is None  # one runner was begun, and it is handed out once
    name = prelaunch.reserved_name(runner_id)
    assert name is not None
    assert name.startswith(f"falemu-app-{runner_id.removeprefix('app-')}-")
    api_dir = prelaunch.take_api_dir()
    assert api_dir is not None
    assert Path(api_dir).parent == first_dir.parent
    assert api_dir != str(first_dir)
    assert oct(os.stat(api_dir).st_mode & 0o777) == "0o711"
    expected = request(runner_id, api_dir)
    assert engine.calls == [
        ("POST", f"/v1.45/containers/create?name={name}", expected),
        ("POST", "/v1.45/containers/c0ffee/start", None),
    ]
    # The runtime's own request for that runner is the same: it adopts the container.
    claimed = prelaunch.claim(SOCKET, name, expected)
    assert claimed is not None
    assert claimed.container_id == "c0ffee"
    assert claimed.began <= claimed.created <= claimed.running
    assert prelaunch.discard_unclaimed() == 0


def test_a_different_request_or_engine_is_not_claimed_and_the_early_container_goes(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    planned_run(project)
    engine = Engine()
    monkeypatch.setattr(prelaunch, "_call", engine)
    prelaunch.early(ARGV)
    runner_id = prelaunch.take_runner_id("app")
    assert runner_id is not None
    name = prelaunch.reserved_name(runner_id)
    assert name is not None
    api_dir = prelaunch.take_api_dir()
    assert api_dir is not None
    changed = request(runner_id, api_dir)
    changed["Image"] = "falemu/app:5678"

    assert prelaunch.claim(SOCKET, name, changed) is None
    assert engine.calls[-1] == ("DELETE", "/containers/c0ffee?force=1&v=1", None)
    assert prelaunch.claim(SOCKET, name, request(runner_id, api_dir)) is None  # claimed once, then gone

    prelaunch._state = prelaunch._State()
    prelaunch.early(ARGV)
    runner_id = prelaunch.take_runner_id("app")
    assert runner_id is not None
    name = prelaunch.reserved_name(runner_id)
    assert name is not None
    assert prelaunch.claim("/another/engine.sock", name, request(runner_id, str(prelaunch.take_api_dir()))) is None


def test_a_changed_file_command_line_or_environment_means_no_early_launch(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    planned_run(project)
    engine = Engine()
    monkeypatch.setattr(prelaunch, "_call", engine)

    prelaunch.early([*ARGV, "--verbose"])
    monkeypatch.setenv("FALEMU_OWNER", "someone")
    prelaunch.early(ARGV)
    monkeypatch.delenv("FALEMU_OWNER")
    assert engine.calls == []

    monkeypatch.setenv("SHLVL", "7")  # a new terminal is the same environment
    monkeypatch.setenv("PWD", "/elsewhere")
    prelaunch.early(ARGV)
    assert len(engine.calls) == 2
    prelaunch.discard_unclaimed()

    prelaunch._state = prelaunch._State()
    engine.calls.clear()
    later = time.time_ns() + 5_000_000_000
    os.utime(project / "pyproject.toml", ns=(later, later))
    prelaunch.early(ARGV)
    (project / ".env").write_text("A=1\n")  # a file that did not exist then
    prelaunch.early(ARGV)
    monkeypatch.setenv("FALEMU_PRELAUNCH", "0")
    prelaunch.early(ARGV)
    assert engine.calls == []


def test_a_create_the_engine_refuses_leaves_nothing_to_adopt(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    planned_run(project)
    engine = Engine(create_status=404)  # the image is gone
    monkeypatch.setattr(prelaunch, "_call", engine)
    prelaunch.early(ARGV)
    assert prelaunch.take_runner_id("app") is None
    assert prelaunch.discard_unclaimed() == 1  # removed by name, whatever the engine made of it
    assert engine.calls[-1][0] == "DELETE"
    assert engine.calls[-1][1].startswith("/containers/falemu-app-")


def test_apps_with_secrets_and_other_commands_are_not_planned(project: Path) -> None:
    config = AppConfig(name="app", alias="app", shape=AppShape.DIRECT_SERVER, project_root=project)
    prelaunch._state.key = "k"
    prelaunch.record("app", "app-1a2b", request("app-1a2b", "/tmp/x"), SOCKET, "")
    prelaunch.do_not_plan("app")
    assert not prelaunch.save([config], None)

    prelaunch._state = prelaunch._State()
    prelaunch.early(["falemu", "check"])  # only `falemu up` plans
    prelaunch.record("app", "app-1a2b", request("app-1a2b", "/tmp/x"), SOCKET, "")
    assert not prelaunch.save([config], None)
    assert not (Path(prelaunch.plan_dir())).exists()


def test_only_the_plans_written_last_are_kept(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prelaunch, "MAX_PLANS", 3)
    config = AppConfig(name="app", alias="app", shape=AppShape.DIRECT_SERVER, project_root=project)
    for n in range(5):
        prelaunch._state = prelaunch._State()
        prelaunch._state.key = f"plan{n}"
        prelaunch.record("app", "app-1a2b", request("app-1a2b", "/tmp/x"), SOCKET, "")
        assert prelaunch.save([config], None)
        path = Path(prelaunch.plan_dir()) / f"plan{n}.json"
        os.utime(path, ns=(n * 10**9, n * 10**9))
    assert sorted(p.name for p in Path(prelaunch.plan_dir()).iterdir()) == ["plan2.json", "plan3.json", "plan4.json"]


def test_a_changed_file_of_the_build_context_means_no_early_launch(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (project / "Dockerfile").write_text("FROM scratch\nCOPY weights /weights\n")
    (project / "weights").mkdir()
    (project / "weights" / "model.bin").write_bytes(b"v1")
    assert planned_context_run(project)
    engine = next_process(monkeypatch)

    (project / "weights" / "model.bin").write_bytes(b"v2")
    prelaunch.early(ARGV)
    assert engine.calls == []


def test_the_uploader_socket_listens_from_the_early_launch_on(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    planned_run(project)
    monkeypatch.setattr(prelaunch, "_call", Engine())
    prelaunch.early(ARGV)
    folder = prelaunch._state.api_dir
    assert folder is not None
    with socket.socket(socket.AF_UNIX) as runner:  # a runner connecting at once waits in the backlog
        runner.connect(os.path.join(folder, prelaunch.API_SOCKET_NAME))
    assert oct(os.stat(os.path.join(folder, prelaunch.API_SOCKET_NAME)).st_mode & 0o777) == "0o666"
    prelaunch.discard_unclaimed()  # no CDN took it
    assert not os.path.exists(folder)


def test_an_engine_that_hangs_up_without_an_answer_is_an_engine_gone(tmp_path: Path) -> None:
    import socket
    import threading

    path = str(tmp_path / "engine.sock")
    with socket.socket(socket.AF_UNIX) as engine:
        engine.bind(path)
        engine.listen()

        def hang_up() -> None:
            for _ in range(2):
                conn, _ = engine.accept()
                conn.recv(65536)
                conn.close()

        thread = threading.Thread(target=hang_up)
        thread.start()
        state = prelaunch._State()
        state.socket = path
        launched = prelaunch.Launched("app", "app-1a2b", "falemu-app-1a2b-abcdef", {}, time.monotonic())
        state.launched.append(launched)
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(prelaunch, "_state", state)
            with pytest.raises(OSError):
                prelaunch._call("POST", "/containers/x/start")
            assert prelaunch.claim(path, launched.name, {"Image": "other"}) is None  # removal tried, not raised
        thread.join(timeout=10)


@pytest.mark.parametrize("change", ["dist/app.whl", "build/data.bin", ".config/settings", "new.txt"])
def test_any_change_a_build_would_see_means_no_early_launch(
    project: Path, monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    (project / "Dockerfile").write_text("FROM scratch\nCOPY . /app\n")
    for rel in ("dist/app.whl", "build/data.bin", ".config/settings"):  # in the build context, as fal sends it
        (project / rel).parent.mkdir(exist_ok=True)
        (project / rel).write_bytes(b"v1")
    assert planned_context_run(project)
    engine = next_process(monkeypatch)

    later = time.time_ns() + 5_000_000_000
    (project / change).write_bytes(b"v2!")  # a changed file, or one that was not there
    os.utime(project / change, ns=(later, later))
    os.utime((project / change).parent, ns=(later, later))
    prelaunch.early(ARGV)
    assert engine.calls == []


def test_a_build_context_too_large_to_stamp_is_not_planned(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prelaunch, "MAX_CONTEXT_FILES", 2)
    (project / "Dockerfile").write_text("FROM scratch\nCOPY . /app\n")
    for n in range(3):
        (project / f"weights{n}.bin").write_bytes(b"w")
    assert not planned_context_run(project)


def test_falemu_s_own_flag_before_up_still_uses_the_plan(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    argv = ["falemu", "--debug", "up", "--port", "0"]
    planned_run(project, argv=argv)
    engine = Engine()
    monkeypatch.setattr(prelaunch, "_call", engine)
    prelaunch.early(argv)
    assert [call[0] for call in engine.calls] == ["POST", "POST"]
    assert prelaunch.take_runner_id("app") is not None
