"""Every command that works on a project takes ``--project``; ps, logs and down scope themselves to it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from falemu.cli import cli

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "direct-server"


@pytest.mark.parametrize("command", ["up", "check", "config", "doctor", "env", "ps", "logs", "down"])
def test_command_takes_project(command: str) -> None:
    args = [command, "validate", "--help"] if command == "config" else [command, "--help"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "--project" in result.output


def test_instances_are_scoped_to_the_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The state file of a live `falemu up` of another project is not picked by ps/logs --project."""
    from falemu import state

    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    directory = state.state_dir()
    directory.mkdir(parents=True)
    # A live process (this one) serving another folder.
    other = state.Instance(
        pid=os.getpid(), url="http://127.0.0.1:9", admin_token="t", project=str(tmp_path), apps=["x"], started=1.0
    )
    (directory / f"{os.getpid()}.json").write_text(other.to_json())
    assert [i.project for i in state.instances()] == [str(tmp_path)]
    assert state.instances(EXAMPLE) == []
    assert len(state.instances(tmp_path)) == 1


def test_env_chaos_and_logs_run_in_a_project_pick_its_falemu_up_over_a_newer_one_of_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two `falemu up`s of two projects: a command in one project's folder talks to that project's."""
    from falemu import state

    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    monkeypatch.setenv("FALEMU_CONFIG_DIR", str(tmp_path / "config"))
    directory = state.state_dir()
    directory.mkdir(parents=True)
    mine, theirs, elsewhere = tmp_path / "mine", tmp_path / "theirs", tmp_path / "elsewhere"
    for folder in (mine, theirs, elsewhere):
        (folder / ".git").mkdir(parents=True)  # a project root, as fal finds it
    (mine / "sub").mkdir()
    (mine / "pyproject.toml").write_text('[tool.fal.apps.a]\nref = "app.py::A"\n')
    # Two live processes (this one and its parent); the other project's was started later.
    for pid, project, port, started in ((os.getpid(), mine, 1, 1.0), (os.getppid(), theirs, 2, 2.0)):
        instance = state.Instance(
            pid=pid, url=f"http://127.0.0.1:{port}", admin_token="t", project=str(project), apps=["a"], started=started
        )
        (directory / f"{pid}.json").write_text(instance.to_json())

    def env_host(folder: Path, *args: str) -> str:
        monkeypatch.chdir(folder)
        result = CliRunner().invoke(cli, ["env", *args])
        assert result.exit_code == 0, result.output
        return next(line for line in result.stdout.splitlines() if line.startswith("export FAL_RUN_HOST="))

    assert env_host(mine / "sub") == "export FAL_RUN_HOST=127.0.0.1:1"
    assert env_host(theirs) == "export FAL_RUN_HOST=127.0.0.1:2"
    assert env_host(elsewhere) == "export FAL_RUN_HOST=127.0.0.1:2"  # no falemu up here: the newest
    assert env_host(elsewhere, "--project", str(mine)) == "export FAL_RUN_HOST=127.0.0.1:1"
    monkeypatch.chdir(mine / "sub")
    chaos = CliRunner().invoke(cli, ["chaos", "list"])  # nothing answers on port 1: the error names the URL
    assert "127.0.0.1:1" in chaos.output
    assert "127.0.0.1:2" not in chaos.output


def test_refs_run_in_folders_without_a_project_are_projects_of_their_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`falemu up app.py::App` in two folders no project holds (fal's root: `/`): two projects, not one
    called `/` (their queue stores collided: the second `falemu up` stopped, 'in use by another')."""
    from falemu import state
    from falemu.cli.options import load_for
    from falemu.config import find_project_root
    from falemu.queue._location import queue_dir

    first, second = tmp_path / "first", tmp_path / "second"
    for folder in (first, second):
        folder.mkdir()
        (folder / "app.py").write_text("")
    if find_project_root(first) != Path("/"):
        pytest.skip(f"{tmp_path} is inside a project (a .git or a fal pyproject above it)")
    roots = []
    for folder in (first, second):
        monkeypatch.chdir(folder)
        roots.append(load_for(None, ["app.py::App"]).root)
    assert roots == [first.resolve(), second.resolve()]
    assert queue_dir(roots[0], "local") != queue_dir(roots[1], "local")

    # And a command run in one of those folders talks to the `falemu up` run there, not to the newest.
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    monkeypatch.setenv("FALEMU_CONFIG_DIR", str(tmp_path / "config"))
    directory = state.state_dir()
    directory.mkdir(parents=True)
    for pid, project, port, started in ((os.getpid(), roots[0], 1, 1.0), (os.getppid(), roots[1], 2, 2.0)):
        instance = state.Instance(
            pid=pid, url=f"http://127.0.0.1:{port}", admin_token="t", project=str(project), apps=["a"], started=started
        )
        (directory / f"{pid}.json").write_text(instance.to_json())
    monkeypatch.chdir(first)
    result = CliRunner().invoke(cli, ["env"])
    assert result.exit_code == 0, result.output
    assert "export FAL_RUN_HOST=127.0.0.1:1" in result.stdout.splitlines()


@pytest.mark.docker
def test_down_with_project_removes_only_that_projects_runners(
    docker_client: object, base_image: str, tmp_path: Path
) -> None:
    import shutil

    import docker

    # A copy of the example: the example's own runners, started by other tests meanwhile, are not ours.
    project = tmp_path / "direct-server"
    shutil.copytree(EXAMPLE, project)
    client = docker.from_env()
    owner = {"falemu.owner": "1@elsewhere"}
    labels_mine = {"falemu.app": "greeter", "falemu.runner": "greeter-test-down", **owner}
    labels_mine["falemu.project"] = str(project.resolve())
    labels_other = {"falemu.app": "not-in-project", "falemu.runner": "other-test-down", **owner}
    # The same app name in another project: not this project's runner.
    labels_twin = {"falemu.app": "greeter", "falemu.runner": "twin-test-down", "falemu.project": "/elsewhere", **owner}
    mine = client.containers.create(base_image, ["sleep", "60"], labels=labels_mine)
    other = client.containers.create(base_image, ["sleep", "60"], labels=labels_other)
    twin = client.containers.create(base_image, ["sleep", "60"], labels=labels_twin)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "falemu", "down", "--project", str(project)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stderr
        remaining = {c.id for c in client.containers.list(all=True, filters={"label": "falemu.app"})}
        assert mine.id not in remaining
        assert other.id in remaining
        assert twin.id in remaining
        assert "skipped" in proc.stdout
        assert "it belongs to project /elsewhere" in proc.stdout
    finally:
        for container in (mine, other, twin):
            try:
                container.remove(force=True)
            except docker.errors.NotFound:
                pass
        client.close()


def test_down_of_an_app_the_project_does_not_have_says_so(docker_client: object, tmp_path: Path) -> None:
    """A misspelt --app removes nothing: one error naming the project's apps, not "0 container(s) removed"."""
    import shutil

    project = tmp_path / "direct-server"
    shutil.copytree(EXAMPLE, project)
    for args, cwd in ((["--app", "greter"], project), (["--app", "greter", "--project", str(project)], tmp_path)):
        proc = subprocess.run(
            [sys.executable, "-m", "falemu", "down", *args], capture_output=True, text=True, timeout=60, cwd=cwd
        )
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.splitlines() == [
            f"error: no app 'greter' in the project at {project.resolve()}, and no runner of that name",
            "hint: its apps: greeter (--app takes the deployed name)",
        ]
