"""Nothing is left behind: normal stop, SIGINT, SIGTERM, SIGKILL then the next start, `falemu down`.

A stand-in falemu process (tests/apps/owner-script/owner.py) starts one runner with DockerRuntime and
blocks; the test signals it and then asks Docker what is left with this test's app label.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from falemu.runtime import labels
from falemu.runtime.cleanup import reap_orphans, remove_containers
from falemu.runtime.engine_api import EngineAPI

pytestmark = pytest.mark.docker


def _start_owner(rt_apps: Any, image: str, alias: str, tmp_path: Path, mode: str) -> tuple[subprocess.Popen[str], str]:
    script = rt_apps.test_apps / "owner-script" / "owner.py"
    proc = subprocess.Popen(
        [sys.executable, str(script), image, alias, str(tmp_path), mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("READY"):
        proc.kill()
        _, err = proc.communicate(timeout=30)
        pytest.fail(f"owner script did not start a runner: {line!r} {err[-2000:]}")
    return proc, line.split()[1]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_to_falemu_removes_its_runners(
    rt_apps: Any, docker_runtime: Any, prepared_example: Any, tmp_path: Path, sig: signal.Signals
):
    alias = rt_apps.unique("rt-signal")
    proc, container_id = _start_owner(rt_apps, prepared_example.image, alias, tmp_path, "exit-cleanup")
    client = docker_runtime.client
    (container,) = rt_apps.containers(client, alias)
    assert container.id == container_id
    assert container.labels[labels.OWNER] == f"{proc.pid}@{labels.hostname()}"
    assert container.labels[labels.RUNNER] == "r1"
    assert container.labels[labels.PROJECT] == labels.project_label(tmp_path)  # the app's project folder
    assert container.labels[labels.VERSION]
    proc.send_signal(sig)
    try:
        proc.wait(timeout=60)
    finally:  # a stand-in that did not exit is not left running, nor its runner
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
            remove_containers(client, alias)
    assert rt_apps.containers(client, alias) == []


def test_sigkill_leaves_a_container_that_the_next_start_removes(
    rt_apps: Any, docker_runtime: Any, prepared_example: Any, tmp_path: Path
):
    from falemu.events import EventBus, Notice
    from falemu.runtime.docker import DockerRuntime

    alias = rt_apps.unique("rt-kill")
    proc, container_id = _start_owner(rt_apps, prepared_example.image, alias, tmp_path, "exit-cleanup")
    client = docker_runtime.client
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    # SIGKILL cannot be caught: the runner is still there ...
    assert [c.id for c in rt_apps.containers(client, alias)] == [container_id]
    # ... until the next falemu start reaps containers whose owner process is gone.
    events = EventBus()
    DockerRuntime(events=events).close()
    assert rt_apps.containers(client, alias) == []
    assert any(isinstance(e, Notice) and alias in e.message for e in events.history)


def test_normal_stop_and_close_leave_nothing(rt_apps: Any, prepared_example: Any, tmp_path: Path):
    import dataclasses

    from falemu.runtime.base import RunnerSpec
    from falemu.runtime.docker import DockerRuntime

    app = dataclasses.replace(prepared_example.app, alias=rt_apps.unique("rt-stop"))
    prepared = dataclasses.replace(prepared_example, app=app)
    runtime = DockerRuntime(reap=False)
    spec = RunnerSpec(prepared, "n1", "local", tmp_path, gpu="off")
    first = runtime.start(spec)
    runtime.start(dataclasses.replace(spec, runner_id="n2"))
    assert len(rt_apps.containers(runtime.client, app.alias)) == 2
    runtime.stop(first)
    assert len(rt_apps.containers(runtime.client, app.alias)) == 1
    client = runtime.client
    runtime.close()
    import docker

    check = docker.from_env()
    try:
        assert rt_apps.containers(check, app.alias) == []
    finally:
        check.close()
    assert client is not None


def test_foreign_containers_are_never_touched(rt_apps: Any, docker_runtime: Any, base_image: str):
    client = docker_runtime.client
    alias = rt_apps.unique("rt-down")
    mark = rt_apps.unique("not-falemu")
    foreign = client.containers.create(base_image, ["sleep", "60"], labels={"test.mark": mark})
    # Made by a falemu process on another host: its owner cannot be checked from here, so it stays.
    elsewhere = client.containers.create(
        base_image,
        ["sleep", "60"],
        labels={labels.APP: alias + "-remote", labels.OWNER: "1@some-other-host", labels.RUNNER: "r9"},
    )
    # Made by a falemu process on this host that no longer exists: an orphan.
    dead_pid = _dead_pid()
    orphan = client.containers.create(
        base_image,
        ["sleep", "60"],
        labels={labels.APP: alias, labels.OWNER: f"{dead_pid}@{labels.hostname()}", labels.RUNNER: "r1"},
    )
    mine = client.containers.create(base_image, ["sleep", "60"], labels={labels.APP: alias, labels.RUNNER: "r2"})
    try:
        removed = reap_orphans(EngineAPI(sdk=lambda: client))  # the SDK's session (the socket: at each start)
        assert orphan.id in {r.id for r in removed}
        assert mine.id not in {r.id for r in removed}
        assert {c.id for c in rt_apps.containers(client, alias)} == {mine.id}

        from falemu.cli.down import down

        labelled = {labels.APP: alias, labels.OWNER: f"{dead_pid}@{labels.hostname()}", labels.RUNNER: "r3"}
        orphan = client.containers.create(base_image, ["sleep", "60"], labels=labelled)
        result = CliRunner().invoke(down, ["--orphans"])
        assert result.exit_code == 0, result.output
        assert {c.id for c in rt_apps.containers(client, alias)} == {mine.id}  # the orphan only

        result = CliRunner().invoke(down, ["--app", alias])
        assert result.exit_code == 0, result.output
        assert "1 container(s) removed" in result.output
        assert rt_apps.containers(client, alias) == []
        assert remove_containers(client, alias) == []
        # Neither the unlabelled container nor the other host's one was touched.
        client.containers.get(foreign.id)
        client.containers.get(elsewhere.id)
    finally:
        for c in (foreign, elsewhere, orphan, mine):
            try:
                c.remove(force=True)
            except Exception:
                pass


def test_down_with_app_or_project_leaves_another_projects_runners_of_the_same_app_alone(
    rt_apps: Any, docker_runtime: Any, base_image: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from falemu.cli.down import down

    client = docker_runtime.client
    alias = rt_apps.unique("rt-twin")
    projects = {}
    for name in ("one", "two"):
        folder = tmp_path / name
        folder.mkdir()
        (folder / ".git").mkdir()  # a project root, as fal finds it
        (folder / "pyproject.toml").write_text(f'[tool.fal.apps.{alias}]\nimage = "{base_image}"\n')
        projects[name] = folder
    me = f"{os.getpid()}@{labels.hostname()}"  # a live owner, as a running falemu up of each project

    def runner(project: str, name: str) -> Any:
        meta = {
            labels.APP: alias,
            labels.RUNNER: name,
            labels.OWNER: me,
            labels.PROJECT: labels.project_label(projects[project]),
        }
        return client.containers.create(base_image, ["sleep", "60"], labels=meta)

    made = [runner("one", "a1"), runner("one", "a2"), runner("two", "b1")]
    try:
        result = CliRunner().invoke(down, ["--project", str(projects["one"])])
        assert result.exit_code == 0, result.output
        assert "2 container(s) removed, 1 skipped" in result.output
        assert f"it belongs to project {projects['two'].resolve()}" in result.output
        assert [c.labels[labels.RUNNER] for c in rt_apps.containers(client, alias)] == ["b1"]
        monkeypatch.chdir(projects["one"])  # --app alone: the project found from here, not the other one's
        result = CliRunner().invoke(down, ["--app", alias])
        assert result.exit_code == 0, result.output
        assert "0 container(s) removed, 1 skipped" in result.output
        monkeypatch.chdir(projects["two"])
        result = CliRunner().invoke(down, ["--app", alias])
        assert "1 container(s) removed" in result.output
        assert rt_apps.containers(client, alias) == []
    finally:
        for c in made:
            try:
                c.remove(force=True)
            except Exception:
                pass


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    pid = proc.pid
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return pid
    pytest.skip("could not find a dead pid")
