"""DockerRuntime on the real engine: build, runners, /data, readiness failures, environment."""

from __future__ import annotations

import dataclasses
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from docker_support import remove_images

from falemu.config.model import ImageConfig, ScalingConfig
from falemu.errors import ImageError, RunnerError, StartupTimeout
from falemu.events import BuildFinished, BuildStarted, BuildStep, Event, EventBus, Notice, RunnerFailed, RunnerReady
from falemu.runtime.base import RunnerSpec
from falemu.runtime.docker import ContainerHandle
from falemu.runtime.images import BuildFailed

pytestmark = pytest.mark.docker


def _spec(prepared: Any, runner_id: str, data_dir: Path, **kw: Any) -> RunnerSpec:
    return RunnerSpec(prepared=prepared, runner_id=runner_id, owner="local", data_dir=data_dir, gpu="off", **kw)


def _exec(runtime: Any, runner: Any, *cmd: str) -> str:
    handle = runner.handle
    assert isinstance(handle, ContainerHandle)
    container = runtime.client.containers.get(handle.id)
    # Docker 20.10 under load sometimes loses a short exec's output (exit 0, nothing attached): ask again.
    for _ in range(5):
        result = container.exec_run(list(cmd))
        assert result.exit_code == 0, result.output
        if result.output:
            break
    return str(result.output.decode())


def test_example_builds_and_two_runners_serve_concurrently(
    rt_apps: Any, docker_runtime: Any, prepared_example: Any, tmp_path: Path
):
    assert prepared_example.image.startswith("falemu/")
    events = EventBus()
    with ThreadPoolExecutor(2) as pool:
        futures = [
            pool.submit(docker_runtime.start, _spec(prepared_example, f"r{i}", tmp_path), events) for i in (1, 2)
        ]
        runners = [f.result() for f in futures]
    try:
        assert len({(r.host, r.port) for r in runners}) == 2
        with ThreadPoolExecutor(2) as pool:
            answers = list(
                pool.map(lambda r: httpx.post(f"{r.url}/greet", json={"name": "fal"}, timeout=10).json(), runners)
            )
        assert sorted(a["runner"] for a in answers) == ["r1", "r2"]
        assert all(a["message"] == "Hello, fal." for a in answers)
        for runner in runners:
            assert set(runner.timeline) >= {"build", "create", "start", "port_open", "http_ready"}
            assert docker_runtime.is_alive(runner)
        ready = [e for e in events.history if isinstance(e, RunnerReady)]
        assert sorted(e.runner for e in ready) == ["r1", "r2"]
    finally:
        for runner in runners:
            docker_runtime.stop(runner, grace=1)
    assert rt_apps.containers(docker_runtime.client, prepared_example.app.alias) == []
    assert not docker_runtime.is_alive(runners[0])


def test_only_the_first_runner_from_a_build_counts_the_build_in_its_start_up(
    docker_runtime: Any, prepared_example: Any, tmp_path: Path
):
    # As if this prepare had built the image for 7.5 s (a fresh build is what `falemu up` waits for once).
    built = dataclasses.replace(prepared_example, built=True, build_seconds=7.5)
    events = EventBus()
    first = docker_runtime.start(_spec(built, "b1", tmp_path), events)
    try:
        second = docker_runtime.start(_spec(built, "b2", tmp_path), events)  # scale-out or a replacement
        docker_runtime.stop(second, grace=1)
    finally:
        docker_runtime.stop(first, grace=1)
    assert first.timeline["build"] == 7.5
    assert second.timeline["build"] == 0.0  # it did not wait for the build: its start-up is its own
    ready = {e.runner: e.timeline for e in events.history if isinstance(e, RunnerReady)}
    assert (ready["b1"]["build"], ready["b2"]["build"]) == (7.5, 0.0)


def test_unchanged_app_is_not_rebuilt_and_a_change_is(docker_runtime: Any, prepared_example: Any, tmp_path: Path):
    events = EventBus()
    again = docker_runtime.prepare(prepared_example.app, events)
    assert again.built is False
    assert again.image == prepared_example.image
    assert [e for e in events.history if isinstance(e, BuildFinished)][-1].cached is True
    assert not [e for e in events.history if isinstance(e, BuildStep)]

    # A changed build input is a different image.
    project = tmp_path / "proj"
    project.mkdir()
    for name in ("Dockerfile", "server.py"):
        (project / name).write_text((prepared_example.app.project_root / name).read_text())
    app = dataclasses.replace(
        prepared_example.app,
        project_root=project,
        image=dataclasses.replace(prepared_example.app.image, dockerfile=project / "Dockerfile"),
    )
    first = docker_runtime.prepare(app)
    (project / "server.py").write_text((project / "server.py").read_text() + "\n# changed\n")
    (project / "notes.md").write_text("ignored by fal's default ignore list")
    second = docker_runtime.prepare(app)
    assert second.image != first.image
    assert second.built is True
    (project / "notes.md").write_text("still ignored, still the same image")
    assert docker_runtime.prepare(app).built is False
    remove_images(docker_runtime.client, {first.image, second.image} - {prepared_example.image})


def test_data_is_shared_between_runners_and_survives_a_restart(
    docker_runtime: Any, prepared_example: Any, tmp_path: Path
):
    data = tmp_path / "data"
    first = docker_runtime.start(_spec(prepared_example, "w1", data))
    second = docker_runtime.start(_spec(prepared_example, "w2", data))
    try:
        _exec(docker_runtime, first, "sh", "-c", "mkdir -p /data/notes && echo from-w1 > /data/notes/hello.txt")
        assert _exec(docker_runtime, second, "cat", "/data/notes/hello.txt").strip() == "from-w1"
        env = _exec(docker_runtime, second, "env")
    finally:
        docker_runtime.stop(first, grace=1)
        docker_runtime.stop(second, grace=1)
    assert (data / "notes" / "hello.txt").read_text().strip() == "from-w1"
    restarted = docker_runtime.start(_spec(prepared_example, "w3", data))
    try:
        assert _exec(docker_runtime, restarted, "cat", "/data/notes/hello.txt").strip() == "from-w1"
    finally:
        docker_runtime.stop(restarted, grace=1)
    alias = prepared_example.app.alias
    assert f"FAL_APP_NAME=local/{alias}" in env
    assert "FAL_JOB_ID=w2" in env
    assert "HF_HOME=/data/.cache/huggingface" in env
    assert "FAL_RUNNER_STATE=" in env


def test_runner_environment_secrets_limits_and_host_gateway(
    docker_runtime: Any, prepared_example: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    project = tmp_path / "proj"
    project.mkdir()
    (project / ".env").write_text("API_TOKEN='from-dotenv'\nOTHER=also\n")
    monkeypatch.setenv("HF_TOKEN", "from-env")
    app = dataclasses.replace(
        prepared_example.app,
        project_root=project,
        secrets=("API_TOKEN", "HF_TOKEN", "NOT_SET_ANYWHERE"),
        machine_types=("S",),
        data_mounts=("/data/.cache",),
    )
    events = EventBus()
    prepared = dataclasses.replace(prepared_example, app=app)
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "from-host.txt").write_text("mounted")
    spec = _spec(prepared, "e1", tmp_path / "data", machine_limits=True, mounts={str(extra): "/run/extra"})
    runner = docker_runtime.start(spec, events)
    try:
        assert _exec(docker_runtime, runner, "cat", "/run/extra/from-host.txt") == "mounted"
        _exec(docker_runtime, runner, "sh", "-c", "echo back > /run/extra/from-runner.txt")
        env = _exec(docker_runtime, runner, "env")
        hosts = _exec(docker_runtime, runner, "cat", "/etc/hosts")
        mounts = _exec(docker_runtime, runner, "sh", "-c", "ls -d /data/.cache; ls -A /data")
        handle = runner.handle
        assert isinstance(handle, ContainerHandle)
        host_config = docker_runtime.client.api.inspect_container(handle.id)["HostConfig"]
    finally:
        docker_runtime.stop(runner, grace=1)
    assert (extra / "from-runner.txt").read_text().strip() == "back"  # RunnerSpec.mounts: read-write bind
    assert "API_TOKEN=from-dotenv" in env
    assert "HF_TOKEN=from-env" in env
    assert "OTHER=" not in env  # only the app's secrets come from .env
    assert "host.docker.internal" in hosts
    assert mounts.split() == ["/data/.cache", ".cache"]  # data_mounts: only /data/.cache is mounted
    assert host_config["NanoCpus"] == 1_000_000_000  # machine type S: 1 CPU, 1 GB
    assert host_config["Memory"] == 1024 * 1024 * 1024
    assert host_config["PortBindings"]["8000/tcp"][0]["HostIp"] == "127.0.0.1"
    notices = [e for e in events.history if e.kind == "Notice"]
    assert any("NOT_SET_ANYWHERE" in getattr(e, "message", "") for e in notices)
    assert not any("from-dotenv" in str(e.to_dict()) or "from-env" in str(e.to_dict()) for e in events.history)


def test_exit_during_startup_is_reported_within_two_seconds_with_logs(
    rt_apps: Any, docker_runtime: Any, tmp_path: Path
):
    app = rt_apps.special("exits-at-start")
    prepared = docker_runtime.prepare(app)
    events = EventBus()
    with pytest.raises(RunnerError) as info:
        docker_runtime.start(_spec(prepared, "x1", tmp_path, keep_failed=True, startup_timeout=120), events)
    raised_at = time.time()
    try:
        (container,) = rt_apps.containers(docker_runtime.client, app.alias)
        state = container.attrs["State"]
        finished = _docker_time(state["FinishedAt"])
    finally:
        for c in rt_apps.containers(docker_runtime.client, app.alias):
            c.remove(force=True)
    error = info.value
    assert not isinstance(error, StartupTimeout)
    assert error.container_exit_code == 3
    assert "exited with code 3" in error.message
    assert "fatal: MODEL_PATH is not set" in error.logs
    assert "booting" in error.logs
    assert "fatal: MODEL_PATH is not set" in (error.hint or "")
    # Docker's own record of the exit against the moment falemu raised (same host clock).
    assert raised_at - finished < 2.0, f"reported {raised_at - finished:.2f} s after the exit"
    failed = [e for e in events.history if isinstance(e, RunnerFailed)]
    assert len(failed) == 1
    assert failed[0].runner == "x1"


def _docker_time(text: str) -> float:
    # 2026-11-26T20:13:02.771703567Z: Python parses at most microseconds.
    head, _, frac = text.rstrip("Z").partition(".")
    stamp = datetime.fromisoformat(head + "+00:00").timestamp()
    return stamp + (float("0." + frac) if frac else 0.0)


@pytest.mark.parametrize("folder", ["binds-localhost", "binds-localhost-no-cat"])
def test_server_bound_to_loopback_gets_its_message(rt_apps: Any, docker_runtime: Any, tmp_path: Path, folder: str):
    app = rt_apps.special(folder)
    prepared = docker_runtime.prepare(app)
    with pytest.raises(RunnerError) as info:
        docker_runtime.start(_spec(prepared, "l1", tmp_path, startup_timeout=60))
    assert info.value.message == "the server listens on 127.0.0.1:8000 inside the container; fal needs 0.0.0.0"
    assert "0.0.0.0" in (info.value.hint or "")
    assert rt_apps.containers(docker_runtime.client, app.alias) == []


def test_a_server_on_another_port_is_said_within_seconds_and_the_start_waits_for_its_timeout(
    rt_apps: Any, docker_runtime: Any, prepared_example: Any, tmp_path: Path
):
    app = dataclasses.replace(prepared_example.app, alias=rt_apps.unique("rt-port"), exposed_port=9000)
    prepared = dataclasses.replace(prepared_example, app=app)  # the example listens on 8000
    events = EventBus()
    seen: list[tuple[float, Event]] = []
    events.subscribe(lambda e: seen.append((time.monotonic(), e)))
    started = time.monotonic()
    with pytest.raises(StartupTimeout) as info:
        docker_runtime.start(_spec(prepared, "p1", tmp_path, startup_timeout=20), events)
    ended = time.monotonic()
    warned = [(at, e) for at, e in seen if isinstance(e, Notice) and e.level == "warning"]
    assert [e.message for _, e in warned] == [
        "runner p1: the server listens on port 8000 inside the container, but exposed_port is 9000; "
        "falemu keeps waiting for port 9000 until startup_timeout (20 s), as fal does"
    ]
    assert ended - started >= 20  # the start still waited for its timeout
    assert ended - warned[0][0] >= 10  # and the warning came long before it, not with it
    # the timeout names what was seen: the caller of a request that waited gets only this message
    assert info.value.message.endswith(
        "never answered 2xx; the server listens on port 8000 inside the container, but exposed_port is 9000"
    )
    assert "exposed_port" in (info.value.hint or "")
    assert rt_apps.containers(docker_runtime.client, app.alias) == []


def test_an_app_name_docker_would_refuse_still_runs(
    rt_apps: Any, docker_runtime: Any, prepared_example: Any, tmp_path: Path
):
    alias = rt_apps.unique("ünï") + "-" + "x" * 300  # not ASCII, and longer than Docker takes in names
    prepared = dataclasses.replace(prepared_example, app=dataclasses.replace(prepared_example.app, alias=alias))
    runner = docker_runtime.start(_spec(prepared, f"{alias}-r1", tmp_path))
    try:
        assert httpx.post(f"{runner.url}/greet", json={"name": "fal"}, timeout=10).status_code == 200
        handle = runner.handle
        assert isinstance(handle, ContainerHandle)
        name = docker_runtime.client.containers.get(handle.id).name
        assert name.isascii()
        assert len(name) < 100
        assert name.startswith("falemu-n-")
    finally:
        docker_runtime.stop(runner)


def test_startup_timeout_fires(rt_apps: Any, docker_runtime: Any, tmp_path: Path):
    app = rt_apps.special(
        "sleeps-forever", scaling=ScalingConfig(startup_timeout=2, termination_grace_period_seconds=1)
    )
    prepared = docker_runtime.prepare(app)
    events = EventBus()
    with pytest.raises(StartupTimeout) as info:
        docker_runtime.start(_spec(prepared, "s1", tmp_path), events)
    assert info.value.error_type == "startup_timeout"
    assert "startup_timeout (2 s)" in info.value.message
    assert rt_apps.containers(docker_runtime.client, app.alias) == []
    failed: list[Event] = [e for e in events.history if isinstance(e, RunnerFailed)]
    assert [getattr(e, "error_type", None) for e in failed] == ["startup_timeout"]


def test_failed_build_names_the_step_and_its_output(rt_apps: Any, docker_runtime: Any):
    app = rt_apps.special("broken-build")
    with pytest.raises(BuildFailed) as info:
        docker_runtime.prepare(app)
    error = info.value
    assert isinstance(error, ImageError)
    assert error.step == 3
    assert error.instruction.startswith("RUN echo")
    assert "failed at step 3/" in error.message
    assert "returned a non-zero code: 1" in error.message
    assert any("error: libfoo.so not found" in line for line in error.output)
    assert "error: libfoo.so not found" in (error.hint or "")
    # stderr comes coloured from the builder: the error shows its text, no escape codes, no blank lines
    assert "\x1b" not in (error.hint or "")
    assert all(line.strip() for line in error.output)


def test_build_secrets_without_buildkit_fail_clearly(rt_apps: Any, docker_runtime: Any):
    from falemu.runtime.images import buildkit_available

    app = rt_apps.special("sleeps-forever")
    assert app.image is not None
    app = dataclasses.replace(app, image=dataclasses.replace(app.image, secrets={"token": "$SOME_TOKEN"}))
    if buildkit_available():
        pytest.skip("this engine has BuildKit (docker buildx): the failure path cannot be shown here")
    with pytest.raises(ImageError) as info:
        docker_runtime.prepare(app)
    assert "need BuildKit" in info.value.message
    assert "buildx" in (info.value.hint or "")


def test_prebuilt_image_found_locally_or_explained(
    rt_apps: Any, docker_runtime: Any, base_image: str, monkeypatch: pytest.MonkeyPatch
):
    app = rt_apps.example()
    local = dataclasses.replace(app, image=ImageConfig(image=base_image))
    prepared = docker_runtime.prepare(local)
    assert prepared.image == base_image
    assert prepared.built is False
    assert prepared.arch == "amd64" or prepared.arch

    missing_ref = f"registry.invalid/falemu/{rt_apps.unique('nope')}:1"
    monkeypatch.setenv("FALEMU_TEST_REG_TOKEN", "secret-token")
    from falemu.config.model import RegistryAuth

    missing = dataclasses.replace(
        app,
        image=ImageConfig(
            image=missing_ref, registries={"registry.invalid": RegistryAuth("me", "$FALEMU_TEST_REG_TOKEN")}
        ),
    )
    with pytest.raises(ImageError) as info:
        docker_runtime.prepare(missing)
    assert missing_ref in info.value.message
    assert "could not be pulled" in info.value.message
    assert "secret-token" not in info.value.message + (info.value.hint or "")

    unset = dataclasses.replace(
        app,
        image=ImageConfig(image=missing_ref, registries={"registry.invalid": RegistryAuth("me", "$FALEMU_UNSET_X")}),
    )
    with pytest.raises(ImageError, match="FALEMU_UNSET_X"):
        docker_runtime.prepare(unset)


def test_logs_and_on_log(docker_runtime: Any, prepared_example: Any, tmp_path: Path):
    lines: list[str] = []
    runner = docker_runtime.start(_spec(prepared_example, "g1", tmp_path, on_log=lines.append))
    try:
        httpx.post(f"{runner.url}/greet", json={"name": "logs"}, timeout=10)
        deadline = time.monotonic() + 10
        while not any("POST /greet" in line for line in lines) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert any("POST /greet" in line for line in lines)
        assert any("Uvicorn running" in line for line in docker_runtime.logs(runner))
    finally:
        docker_runtime.stop(runner, grace=1)
    assert list(docker_runtime.logs(runner)) == []  # gone: no lines, no error


def test_entrypoint_and_cmd_overrides_apply_at_start(
    rt_apps: Any, docker_runtime: Any, base_image: str, tmp_path: Path
):
    app = rt_apps.example()
    overridden = dataclasses.replace(
        app,
        health_check=None,
        image=ImageConfig(image=base_image, entrypoint=("python3", "-m", "http.server"), cmd=("8000",)),
    )
    prepared = docker_runtime.prepare(overridden)
    runner = docker_runtime.start(_spec(prepared, "o1", tmp_path))
    try:
        # The base image has no server of its own: only the overrides make this answer.
        assert httpx.get(runner.url, timeout=10).status_code == 200
        handle = runner.handle
        assert isinstance(handle, ContainerHandle)
        config = docker_runtime.client.api.inspect_container(handle.id)["Config"]
        assert config["Entrypoint"] == ["python3", "-m", "http.server"]
        assert config["Cmd"] == ["8000"]
    finally:
        docker_runtime.stop(runner, grace=1)


def test_concurrent_prepares_of_one_app_build_once(rt_apps: Any, docker_runtime: Any):
    app = rt_apps.special("exits-at-start")
    events = EventBus()
    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda _: docker_runtime.prepare(app, events), range(3)))
    assert len({r.image for r in results}) == 1
    assert sum(r.built for r in results) == 1
    # Progress as it happens: the start, every step of the total, the end.
    (started,) = [e for e in events.history if isinstance(e, BuildStarted)]
    steps = [e for e in events.history if isinstance(e, BuildStep)]
    assert [e.step for e in steps] == list(range(1, started.steps + 1))
    assert all(e.steps == started.steps for e in steps)
    assert steps[1].text == "FROM ${BASE_IMAGE}"
    assert [e.cached for e in events.history if isinstance(e, BuildFinished)].count(False) == 1


def test_machine_limits_make_an_app_too_big_for_its_machine_fail_locally(
    rt_apps: Any, docker_runtime: Any, tmp_path: Path
):
    app = rt_apps.special("memory-hog", machine_types=("XS",))
    prepared = docker_runtime.prepare(app)
    with pytest.raises(RunnerError) as info:
        docker_runtime.start(_spec(prepared, "m1", tmp_path, machine_limits=True, startup_timeout=60))
    assert "killed for using more memory than its limit (512 MB on XS)" in info.value.message
    assert info.value.container_exit_code == 137
    assert "loading weights" in info.value.logs
    assert rt_apps.containers(docker_runtime.client, app.alias) == []


def test_a_local_engines_runners_are_reached_at_their_container_address(
    docker_runtime: Any, prepared_example: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Skipping docker-proxy: the gateway connects to the container's bridge address, where it can."""
    from falemu.runtime.docker import DockerRuntime

    runner = docker_runtime.start(_spec(prepared_example, "direct", tmp_path))
    try:
        assert runner.host != "127.0.0.1"
        assert runner.port == prepared_example.app.exposed_port  # the container's own port
        answer = httpx.post(f"{runner.url}/greet", json={"name": "bridge"}, timeout=10)
        assert answer.json()["message"] == "Hello, bridge."
    finally:
        docker_runtime.stop(runner, grace=1)
    monkeypatch.setenv("FALEMU_DIRECT_ROUTING", "0")
    published = DockerRuntime(reap=False)
    try:
        runner = published.start(_spec(prepared_example, "published", tmp_path))
        assert runner.host == "127.0.0.1"
        assert runner.port != prepared_example.app.exposed_port
        assert httpx.post(f"{runner.url}/greet", json={"name": "proxy"}, timeout=10).status_code == 200
    finally:
        published.close()


def test_a_dead_runners_address_is_refused_even_when_another_runner_holds_it_now(
    docker_runtime: Any, prepared_example: Any, tmp_path: Path
):
    """The engine hands a dead container's bridge address to the next container at once: a request still
    leased to the dead runner must not reach whatever listens there now, another app's runner included."""
    import asyncio

    from falemu.gateway.upstream import UpstreamError, UpstreamPool
    from falemu.runtime import addresses

    first = docker_runtime.start(_spec(prepared_example, "gone", tmp_path))
    assert first.holder > 0
    assert addresses.holds(first.host, first.port, first.holder)
    handle = first.handle
    assert isinstance(handle, ContainerHandle)
    docker_runtime.client.api.kill(handle.id)  # dies without the runtime's knowledge ...
    assert not addresses.holds(first.host, first.port, first.holder)
    docker_runtime.stop(first, grace=0)  # ... then is let go, while a request may still hold its lease
    second = docker_runtime.start(_spec(prepared_example, "next", tmp_path))
    try:

        async def outcome(runner: Any) -> str:
            pool = UpstreamPool(connect_timeout=5)
            try:
                conn = await pool.connect(runner.host, runner.port, runner.holder)
            except UpstreamError as exc:
                return exc.error_type
            conn.close()
            return "connected"

        # On an engine nothing else uses, the next runner takes the freed address: a plain connection to
        # the first runner's address reaches it, falemu's connection for the first runner does not.
        if second.host == first.host:
            assert httpx.post(f"{first.url}/greet", json={"name": "x"}, timeout=10).json()["runner"] == "next"
        assert asyncio.run(outcome(first)) == "runner_connection_refused"
        assert asyncio.run(outcome(second)) == "connected"
    finally:
        docker_runtime.stop(second, grace=0)
