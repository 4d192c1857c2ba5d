"""The engine calls of a runner's start (runtime.engine_api) on the real engine: over the unix socket and
through the Docker SDK they answer alike, and a runner of a prepared image starts before the SDK is imported."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from falemu.runtime import labels
from falemu.runtime.engine_api import EngineAPI, EngineCallError, socket_path

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["socket", "sdk"])
def api(request: pytest.FixtureRequest, docker_client: Any) -> EngineAPI:
    if request.param == "socket":
        path = socket_path()
        assert path is not None, "these tests run on a unix-socket engine"
        return EngineAPI(path)
    return EngineAPI(sdk=lambda: docker_client)


@pytest.fixture
def created(docker_client: Any) -> Iterator[list[str]]:
    ids: list[str] = []
    yield ids
    for container_id in ids:
        try:
            docker_client.api.remove_container(container_id, force=True)
        except Exception:
            pass


def test_the_calls_answer_alike_over_the_socket_and_through_the_sdk(
    api: EngineAPI, base_image: str, created: list[str]
) -> None:
    api.ping()
    assert int(api.info()["NCPU"]) >= 1
    image = api.image(base_image)
    assert image is not None
    assert str(image["Id"]).startswith("sha256:")
    assert api.image("falemu-no-such-image:nothing") is None
    bridge = api.network("bridge")
    assert bridge is not None
    assert bridge["Driver"] == "bridge"
    assert api.network(f"falemu-no-such-network-{uuid.uuid4().hex[:6]}") is None

    name = f"falemu-engine-api-{uuid.uuid4().hex[:8]}"
    config = {
        "Image": base_image,
        "Cmd": ["sleep", "30"],
        "Env": ["FALEMU_PROBE=1"],
        "Labels": labels.runner_labels("engine-api", "r1"),
        "HostConfig": {"Binds": [], "ExtraHosts": ["host.docker.internal:host-gateway"]},
    }
    container_id = api.create(name, config)
    created.append(container_id)
    api.start(container_id)
    attrs = api.container(container_id)
    assert attrs is not None
    assert attrs["Name"] == f"/{name}"
    assert attrs["State"]["Running"] is True
    assert "FALEMU_PROBE=1" in attrs["Config"]["Env"]
    assert attrs["Config"]["Labels"][labels.APP] == "engine-api"
    listed = api.containers(f"{labels.RUNNER}=r1")
    assert container_id in {c["Id"] for c in listed}
    assert {c["Id"]: c["Labels"][labels.APP] for c in listed}[container_id] == "engine-api"

    with pytest.raises(EngineCallError) as taken:
        api.create(name, config)  # the name is in use
    assert taken.value.status == 409
    assert name in taken.value.explanation
    with pytest.raises(EngineCallError) as missing:
        api.create(f"{name}-2", {**config, "Image": "falemu-no-such-image:nothing"})
    assert missing.value.status == 404
    assert "no such image" in missing.value.explanation.lower()
    with pytest.raises(EngineCallError) as gone:
        api.start("falemu-no-such-container")
    assert gone.value.status == 404
    assert api.container("falemu-no-such-container") is None
    assert api.remove(container_id) is True  # running: removed by force
    assert api.container(container_id) is None
    assert api.remove(container_id) is False  # gone already


def test_a_runner_of_a_prepared_image_starts_before_the_docker_sdk_is_imported(base_image: str, tmp_path: Path) -> None:
    """What `falemu up` of an unchanged app waits for: the engine and the runner, not the SDK's import."""
    script = textwrap.dedent(
        f"""
        import json, sys
        from pathlib import Path
        from falemu.config.model import AppConfig, AppShape, ImageConfig
        from falemu.runtime.base import RunnerSpec
        from falemu.runtime.docker import DockerRuntime

        app = AppConfig(
            name="engine-api-start", alias="engine-api-start", shape=AppShape.DIRECT_SERVER,
            project_root=Path({str(tmp_path)!r}), exposed_port=8000,
            image=ImageConfig(image={base_image!r}, cmd=("python3", "-m", "http.server", "8000")),
        )
        runtime = DockerRuntime(reap=False, probe_gpus=False)
        seen = {{}}
        start = runtime._api.start

        def recording(container_id):
            seen["sdk_at_start"] = "docker" in sys.modules
            start(container_id)

        runtime._api.start = recording
        try:
            prepared = runtime.prepare(app)
            seen["sdk_after_prepare"] = "docker" in sys.modules
            runner = runtime.start(RunnerSpec(prepared, "r1", "local", Path({str(tmp_path / "data")!r}), gpu="off"))
            seen["logs"] = list(runtime.logs(runner))  # the SDK, connected meanwhile
            seen["sdk_at_end"] = "docker" in sys.modules
        finally:
            runtime.close()
        print(json.dumps(seen))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=180, check=False
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["sdk_after_prepare"] is False
    assert seen["sdk_at_start"] is False
    assert seen["sdk_at_end"] is True
    assert isinstance(seen["logs"], list)
