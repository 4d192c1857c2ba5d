"""The watcher (real files on disk, watchfiles) and reloads through the Emulator on the FakeRuntime,
whose prepare() hashes the build context as the docker runtime does."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from falemu.config import load_project
from falemu.config.model import AppConfig
from falemu.config.settings import Settings
from falemu.devloop.loop import DevLoop
from falemu.devloop.watch import ContextFilter, Watcher, watched_roots
from falemu.emulator import Emulator
from falemu.errors import ImageError
from falemu.events import Event, EventSink, Notice, ReloadStarted, RolloutFailed, RolloutFinished, null_sink
from falemu.runtime.base import PreparedApp
from falemu.runtime.context import load_context
from falemu.runtime.fake import FakeRuntime
from falemu.state import ADMIN_HEADER
from falemu.testing import wait_until

PYPROJECT = """\
[project]
name = "watched"
version = "0.1.0"

[tool.fal.apps.greeter]
exposed_port = 8000
auth = "public"
keep_alive = 300
{extra}

[tool.fal.apps.greeter.image]
dockerfile = "Dockerfile"
"""


def write_project(root: Path, extra: str = "") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "pyproject.toml").write_text(PYPROJECT.format(extra=extra))
    (root / "Dockerfile").write_text("FROM scratch\nCOPY server.py /app/server.py\n")
    (root / "server.py").write_text("VERSION = 1\n")
    return root


class ContextRuntime(FakeRuntime):
    """FakeRuntime whose images are named by the build context's hash; a file named BROKEN fails the build."""

    def __init__(self) -> None:
        super().__init__()
        self.prepares = 0

    def prepare(self, app: AppConfig, events: EventSink = null_sink, verbose: bool = False) -> PreparedApp:
        self.prepares += 1
        assert app.image is not None
        assert app.image.dockerfile is not None
        if (app.project_root / "BROKEN").exists():
            error = ImageError("step 2 of 2 (COPY server.py /app/server.py) failed", hint="see the output")
            error.output = ["COPY failed: broken on purpose"]  # type: ignore[attr-defined]
            raise error
        digest = load_context(app.project_root, app.image.dockerfile, {}).digest
        return PreparedApp(app=app, image=f"fake/{app.alias}:{digest[:12]}", built=True)


# -- the watcher ------------------------------------------------------------------------------------------


def test_context_filter_follows_the_build_context_rules(tmp_path: Path) -> None:
    root = write_project(tmp_path)
    app = load_project(root).app("greeter")
    context = ContextFilter(app)
    assert context.relevant(root / "server.py") == "server.py"
    assert context.relevant(root / "pkg" / "mod.py") == "pkg/mod.py"
    # fal's default ignore list: docs, caches, the .git folder are not in the context ...
    for ignored in ("README.md", "__pycache__/x.pyc", ".git/HEAD", ".venv/lib/x.py"):
        assert context.relevant(root / ignored) is None, ignored
    # ... but the Dockerfile, the pyproject and the ignore file change the image or the config.
    assert context.relevant(root / "Dockerfile") == "Dockerfile"
    assert context.relevant(root / "pyproject.toml") == "pyproject.toml"
    assert context.relevant(tmp_path.parent / "elsewhere.py") is None
    # A .dockerignore replaces the default list, and is read again when it changes.
    (root / ".dockerignore").write_text("data/\n")
    assert context.relevant(root / ".dockerignore") == ".dockerignore"
    assert context.relevant(root / "data" / "big.bin") is None
    assert context.relevant(root / "README.md") == "README.md"
    assert watched_roots(app) == [root.resolve()]


def test_watcher_sees_real_writes_in_batches(tmp_path: Path) -> None:
    root = write_project(tmp_path)
    app = load_project(root).app("greeter")
    batches: list[tuple[str, list[str]]] = []
    seen = threading.Event()

    def on_change(name: str, paths: list[str]) -> None:
        batches.append((name, paths))
        seen.set()

    watcher = Watcher({"greeter": app}, on_change, step_ms=100).start()
    try:
        (root / "notes.md").write_text("ignored\n")
        (root / "__pycache__").mkdir()
        (root / "__pycache__" / "server.cpython-311.pyc").write_bytes(b"x")
        time.sleep(0.5)
        assert batches == []  # nothing of the build context changed
        (root / "server.py").write_text("VERSION = 2\n")
        (root / "helpers.py").write_text("X = 1\n")
        assert seen.wait(10)
        time.sleep(0.3)
        names = {name for name, _ in batches}
        paths = {p for _, ps in batches for p in ps}
        assert names == {"greeter"}
        assert paths == {"server.py", "helpers.py"}
        assert len(batches) == 1  # two writes in quick succession: one batch
    finally:
        watcher.stop()
    assert watcher.error is None


# -- reloads through the emulator ---------------------------------------------------------------------------


@pytest.fixture
def watched(tmp_path: Path, isolated_home: Path) -> Iterator[tuple[Emulator, ContextRuntime, Path]]:
    root = write_project(tmp_path / "proj")
    runtime = ContextRuntime()
    emu = Emulator(load_project(root), Settings(port=0, data_dir=isolated_home / "data"), runtime=runtime, warm=True)
    with emu:
        yield emu, runtime, root
    assert runtime.running() == []


def kinds(emu: Emulator, kind: type[Event]) -> list[Any]:
    return [e for e in emu.events.history if isinstance(e, kind)]


def served_by(emu: Emulator) -> str:
    response = httpx.post(emu.app_url("greeter") + "/echo", json={}, timeout=10)
    assert response.status_code == 200
    runner: str = response.json()["runner"]
    return runner


def revision_of(emu: Emulator, runner: str) -> int:
    return next(r.revision for r in emu.runners("greeter") if r.id == runner)


def test_reload_rolls_out_changes_and_keeps_the_old_revision_on_a_broken_build(
    watched: tuple[Emulator, ContextRuntime, Path],
) -> None:
    emu, _runtime, root = watched
    assert revision_of(emu, served_by(emu)) == 1
    assert emu.reload("greeter") is None  # nothing changed: no new revision
    assert any("no change in the build context" in n.message for n in kinds(emu, Notice))

    (root / "server.py").write_text("VERSION = 2\n")
    result = emu.reload("greeter", ["server.py"])
    assert result.ok
    assert result.revision == 2
    assert revision_of(emu, served_by(emu)) == 2
    started = kinds(emu, ReloadStarted)[-1]
    assert (started.revision, started.changes) == (2, ["server.py"])

    (root / "BROKEN").write_text("")
    result = emu.reload("greeter")
    assert not result.ok
    assert result.revision == 2
    (failed,) = kinds(emu, RolloutFailed)
    assert (failed.revision, failed.serving, failed.stage) == (3, 2, "build")
    assert "COPY failed: broken on purpose" in failed.logs
    assert revision_of(emu, served_by(emu)) == 2

    (root / "BROKEN").unlink()
    (root / "server.py").write_text("VERSION = 4\n")
    assert emu.reload("greeter").revision == 4
    rows = emu.reloader.rows("greeter")
    assert [(r["number"], r["status"]) for r in rows] == [(1, "retired"), (2, "retired"), (3, "failed"), (4, "serving")]
    # `falemu ps` shows them.
    ps = httpx.get(emu.base_url + "/_falemu/ps", headers={ADMIN_HEADER: emu.admin_token}, timeout=5).json()
    (app,) = ps["apps"]
    assert app["revision"] == 4
    assert [r["revision"] for r in app["runners"] if r["state"] in ("IDLE", "RUNNING")] == [4]


def test_a_config_error_keeps_the_old_revision(watched: tuple[Emulator, ContextRuntime, Path]) -> None:
    emu, _, root = watched
    (root / "pyproject.toml").write_text(PYPROJECT.format(extra="keep_alvie = 30"))
    result = emu.reload("greeter")
    assert not result.ok
    (failed,) = kinds(emu, RolloutFailed)
    assert failed.stage == "config"
    assert "keep_alvie" in failed.message
    assert revision_of(emu, served_by(emu)) == 1


def test_a_new_config_rolls_out_with_fal_inherited_scale_settings(
    watched: tuple[Emulator, ContextRuntime, Path],
) -> None:
    emu, _, root = watched
    (root / "pyproject.toml").write_text(
        PYPROJECT.replace("keep_alive = 300", "keep_alive = 5").format(extra='deployment_strategy = "recreate"')
    )
    result = emu.reload("greeter")
    assert result.ok
    config = emu.configs["greeter"]
    assert config.deployment_strategy == "recreate"
    assert config.scaling.keep_alive == 300  # fal keeps the running revision's keep_alive
    assert kinds(emu, RolloutFinished)[-1].strategy == "recreate"
    assert emu.gateway is not None
    assert emu.gateway.apps["greeter"].config is config


def test_devloop_reloads_on_saved_changes(watched: tuple[Emulator, ContextRuntime, Path]) -> None:
    emu, _runtime, root = watched
    loop = DevLoop(emu, step_ms=50).start()
    try:
        (root / "CHANGELOG.md").write_text("not in the context\n")
        (root / "server.py").write_text("VERSION = 2\n")
        wait_until(lambda: bool(kinds(emu, RolloutFinished)), timeout=20, what="a rollout")
        wait_until(loop.idle, timeout=20, what="the loop at rest")
        assert kinds(emu, ReloadStarted)[0].changes == ["server.py"]
        assert revision_of(emu, served_by(emu)) == 2
        # Many writes while nothing else happens: still one more revision at most per batch.
        for i in range(5):
            (root / "server.py").write_text(f"VERSION = {10 + i}\n")
        wait_until(lambda: len(kinds(emu, RolloutFinished)) >= 2, timeout=20, what="a second rollout")
        wait_until(loop.idle, timeout=20, what="the loop at rest")
        assert len(kinds(emu, RolloutFinished)) <= 3
        assert revision_of(emu, served_by(emu)) == emu.controller("greeter").revision
    finally:
        loop.stop()


def test_a_fal_apps_module_folder_and_image_context_count_too(tmp_path: Path) -> None:
    import dataclasses

    from falemu.config.falapp import FalApp, FalAppImage

    root = write_project(tmp_path / "proj")
    module_dir = tmp_path / "lib"
    context = tmp_path / "ctx"
    for folder in (module_dir, context):
        folder.mkdir()
    image = FalAppImage(dockerfile="FROM scratch\n", image=None, context_dir=context)
    fal_app = FalApp(
        file=module_dir / "app.py",
        class_name="App",
        requirements=(),
        serve_requirements=(),
        image=image,
        kind="container",
        python="3.11.7",
        fal_version="1.83.0",
    )
    app = dataclasses.replace(load_project(root).app("greeter"), fal_app=fal_app)
    context_filter = ContextFilter(app)
    assert context_filter.relevant(module_dir / "app.py") == str((module_dir / "app.py").resolve())
    assert context_filter.relevant(module_dir / "helpers" / "util.py") is not None  # the module folder's Python
    assert context_filter.relevant(module_dir / "notes.txt") is None  # not part of a fal.App's image
    assert context_filter.relevant(module_dir / "__pycache__" / "app.cpython-311.py") is None
    assert context_filter.relevant(context / "weights.txt") is not None  # the ContainerImage's context
    assert context_filter.relevant(tmp_path / "elsewhere.py") is None
    assert set(watched_roots(app)) >= {module_dir.resolve(), context.resolve()}
