"""Fixtures for the runtime's Docker tests: the example app, special test apps, a second engine.

Every app here gets a unique deployed name, so assertions (and cleanup) count only this run's
containers even while other suites use the same engine.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from docker_support import remove_images

from falemu.config.model import AppConfig, AppShape, HealthCheckConfig, ImageConfig, ScalingConfig

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "direct-server"
TEST_APPS = ROOT / "tests" / "apps"


_CREATED: set[str] = set()  # unique names handed out: images labelled with them are removed at the end


def unique(prefix: str) -> str:
    name = f"{prefix}-{secrets.token_hex(4)}"
    _CREATED.add(name)
    return name


def special_app(folder: str, *, alias: str | None = None, **changes: Any) -> AppConfig:
    """A test app from ``tests/apps/<folder>`` (a Dockerfile FROM ``$BASE_IMAGE``) on port 8000."""
    root = TEST_APPS / folder
    app = AppConfig(
        name=folder,
        alias=alias or unique(folder),
        shape=AppShape.DIRECT_SERVER,
        project_root=root,
        image=ImageConfig(dockerfile=root / "Dockerfile", build_args={"BASE_IMAGE": "python:3.11-slim"}),
        exposed_port=8000,
        scaling=ScalingConfig(termination_grace_period_seconds=1),
    )
    return dataclasses.replace(app, **changes)


def example_app(alias: str | None = None) -> AppConfig:
    """The example greeter as the pyproject parser reads it, under a unique name."""
    try:
        from falemu.config import get_app, load_project

        app = get_app(load_project(EXAMPLE / "pyproject.toml"), "greeter")
    except ImportError:  # the parser is another module; the runtime does not depend on it
        app = AppConfig(
            name="greeter",
            alias="greeter",
            shape=AppShape.DIRECT_SERVER,
            project_root=EXAMPLE,
            image=ImageConfig(dockerfile=EXAMPLE / "Dockerfile", build_args={"BASE_IMAGE": "python:3.11-slim"}),
            exposed_port=8000,
            machine_types=("GPU-H100",),
            health_check=HealthCheckConfig(path="/health"),
        )
    return dataclasses.replace(app, alias=alias or unique("rt-greeter"))


@pytest.fixture
def env(tmp_path: Path, base_image: str) -> dict[str, str]:
    """The environment of a `falemu up` subprocess of a user of its own (up_process.user_env)."""
    from up_process import user_env

    return user_env(tmp_path, base_image)


@pytest.fixture(scope="session")
def build_base_override(base_image: str) -> Iterator[str]:
    """``FALEMU_BUILD_ARG_BASE_IMAGE``: apps FROM ``$BASE_IMAGE`` build on the offline base image."""
    old = os.environ.get("FALEMU_BUILD_ARG_BASE_IMAGE")
    os.environ["FALEMU_BUILD_ARG_BASE_IMAGE"] = base_image
    yield base_image
    if old is None:
        os.environ.pop("FALEMU_BUILD_ARG_BASE_IMAGE", None)
    else:
        os.environ["FALEMU_BUILD_ARG_BASE_IMAGE"] = old


@pytest.fixture(scope="session")
def docker_runtime(build_base_override: str) -> Iterator[Any]:
    from falemu.runtime.docker import DockerRuntime

    runtime = DockerRuntime(reap=False)
    yield runtime
    runtime.close()
    import docker

    check = docker.from_env(timeout=120)
    try:
        # The listing as the engine gives it: images.list() inspects each image again, and one another worker
        # removes meanwhile would fail the teardown.
        ours = [
            str(i["Id"])
            for i in check.api.images(filters={"label": "falemu.app"})
            if (i.get("Labels") or {}).get("falemu.app") in _CREATED
        ]
        remove_images(check, ours)
    finally:
        check.close()


@pytest.fixture(scope="session")
def prepared_example(docker_runtime: Any) -> Any:
    """The example app, built once per session (under one unique name)."""
    return docker_runtime.prepare(example_app())


def containers_of(client: Any, alias: str) -> list[Any]:
    return list(client.containers.list(all=True, filters={"label": f"falemu.app={alias}"}))


class RuntimeApps:
    """The helpers above as a fixture (test modules cannot import this conftest)."""

    unique = staticmethod(unique)
    special = staticmethod(special_app)
    example = staticmethod(example_app)
    containers = staticmethod(containers_of)
    test_apps = TEST_APPS


@pytest.fixture(scope="session")
def rt_apps() -> type[RuntimeApps]:
    return RuntimeApps


@dataclass
class SecondEngine:
    """A second dockerd with a fake NVIDIA hook: it accepts GPU device requests."""

    socket: str
    tcp: str  # tcp://<bridge address>:<port> with TLS: runners are reached at a non-loopback address
    address: str
    cert_path: str  # ca.pem, cert.pem and key.pem for DOCKER_CERT_PATH

    @property
    def env(self) -> dict[str, str]:
        """What points a Docker client at this engine over TCP."""
        return {"DOCKER_HOST": self.tcp, "DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": self.cert_path}

    @property
    def unix_url(self) -> str:
        return f"unix://{self.socket}"


def _free_subnet() -> str:
    used = subprocess.run(["ip", "-o", "-4", "addr"], capture_output=True, text=True, check=False).stdout
    for third in range(200, 250):
        prefix = f"172.31.{third}."
        if prefix not in used:
            return prefix
    pytest.skip("no free 172.31.x.0/24 subnet for the second engine")


@pytest.fixture(scope="module")
def gpu_engine(docker_client: Any, base_image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecondEngine]:
    """Start a second dockerd on its own socket, data root, exec root, pidfile and bridge.

    ``nvidia-container-runtime-hook`` first on its PATH is a script that exits 0, so the engine
    registers its NVIDIA device driver and grants GPU requests (the container sees
    ``NVIDIA_VISIBLE_DEVICES``). The main engine is not touched: the new bridge has its own subnet and
    the engine runs with ``--iptables=false``. It also listens on TCP at its bridge address, with TLS
    (certificates from trustme; dockerd delays its start by 15 s for TCP without TLS). The base image
    is copied over with save/load.
    """
    dockerd = shutil.which("dockerd")
    if dockerd is None or os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("the second test engine needs root, dockerd and ip")
    base = tmp_path_factory.mktemp("gpu-engine")
    short = Path("/tmp") / f"falemu-gpu-{secrets.token_hex(3)}"  # unix socket paths must stay short
    short.mkdir()
    (base / "bin").mkdir()
    hook = base / "bin" / "nvidia-container-runtime-hook"
    hook.write_text("#!/bin/sh\nexit 0\n")
    hook.chmod(0o755)
    bridge = f"falemugpu{secrets.token_hex(2)}"
    prefix = _free_subnet()
    address = prefix + "1"
    subprocess.run(["ip", "link", "add", bridge, "type", "bridge"], check=True)
    proc: subprocess.Popen[bytes] | None = None
    log: Any = None
    try:
        subprocess.run(["ip", "addr", "add", f"{address}/24", "dev", bridge], check=True)
        subprocess.run(["ip", "link", "set", bridge, "up"], check=True)
        sock = short / "docker.sock"
        port = 23750 + secrets.randbelow(200)
        import trustme

        ca = trustme.CA()
        certs = base / "certs"
        certs.mkdir()
        ca.cert_pem.write_to_path(str(certs / "ca.pem"))
        server = ca.issue_cert(address)
        server.cert_chain_pems[0].write_to_path(str(certs / "server-cert.pem"))
        server.private_key_pem.write_to_path(str(certs / "server-key.pem"))
        client_cert = ca.issue_cert("falemu-tests")
        client_cert.cert_chain_pems[0].write_to_path(str(certs / "cert.pem"))
        client_cert.private_key_pem.write_to_path(str(certs / "key.pem"))
        env = dict(os.environ, PATH=f"{base / 'bin'}:{os.environ.get('PATH', '')}")
        log = open(base / "dockerd.log", "wb")  # noqa: SIM115 - closed in teardown
        proc = subprocess.Popen(
            [
                dockerd,
                "--host",
                f"unix://{sock}",
                "--host",
                f"tcp://{address}:{port}",
                "--tlsverify",
                "--tlscacert",
                str(certs / "ca.pem"),
                "--tlscert",
                str(certs / "server-cert.pem"),
                "--tlskey",
                str(certs / "server-key.pem"),
                "--data-root",
                str(base / "data"),
                "--exec-root",
                str(short / "exec"),
                "--pidfile",
                str(short / "docker.pid"),
                "--bridge",
                bridge,
                "--iptables=false",
                "--ip-masq=false",
                "--ip-forward=false",
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        import docker

        deadline = time.monotonic() + 60
        while True:
            try:
                client = docker.DockerClient(base_url=f"unix://{sock}", timeout=120)
                client.ping()
                break
            except Exception:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"second dockerd did not start: {(base / 'dockerd.log').read_text()[-2000:]}")
                time.sleep(0.2)
        client.images.load(b"".join(docker_client.images.get(base_image).save(named=True)))
        client.close()
        yield SecondEngine(str(sock), f"tcp://{address}:{port}", address, str(certs))
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        subprocess.run(["ip", "link", "del", bridge], check=False)
        shutil.rmtree(short, ignore_errors=True)
        if log is not None:
            log.close()
        shutil.rmtree(base, ignore_errors=True)
