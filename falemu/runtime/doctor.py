"""``falemu doctor``: is this machine ready to run fal apps locally?

Each check answers ``ok``, ``warn`` or ``fail`` with one line of detail and, when it is not ok, a hint.

The host's GPUs are listed (``nvidia-smi -L``) whether or not a container engine answers: many GPU
machines have the NVIDIA driver and no engine, and there ``falemu up`` runs apps as host processes,
each runner on its own GPUs (``CUDA_VISIBLE_DEVICES``). With an engine, doctor says whether it can pass
those GPUs through to containers, and what to install when it cannot.
"""

from __future__ import annotations

import errno
import os
import platform
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from falemu.config.settings import Settings
from falemu.errors import EngineUnavailable
from falemu.runtime import labels
from falemu.runtime.engine import arch_mismatch, connect, docker_host, first_line, normalize_arch
from falemu.runtime.gpu import HostGpus, detect_gpu_count, is_no_gpu_error, list_host_gpus

Status = Literal["ok", "warn", "fail"]

TOOLKIT_HINT = (
    "install the NVIDIA Container Toolkit (apt install nvidia-container-toolkit; "
    "nvidia-ctk runtime configure --runtime=docker) and restart dockerd, "
    "or use --runtime process to run apps on the GPUs without containers"
)


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str
    hint: str | None = None


def check_host_gpus(gpus: HostGpus) -> Check:
    """The GPUs the NVIDIA driver sees on this machine (informational: a machine without GPUs is fine)."""
    if gpus.names is None:
        return Check("gpus", "ok", f"no NVIDIA GPU seen ({gpus.problem}): GPU apps run on CPU")
    if not gpus.names:
        return Check("gpus", "ok", "nvidia-smi lists no GPU: GPU apps run on CPU")
    return Check("gpus", "ok", f"{len(gpus.names)} GPU(s): " + "; ".join(gpus.names))


def check_engine(
    base_url: str | None = None, *, runtime: str = "auto", gpus: HostGpus | None = None
) -> tuple[Check, Any | None]:
    try:
        client = connect(base_url, timeout=30)
    except EngineUnavailable as exc:
        if runtime == "docker":
            return Check("engine", "fail", exc.message, exc.hint), None
        on_gpus = " (each runner on its own GPUs, by CUDA_VISIBLE_DEVICES)" if gpus is not None and gpus.count else ""
        return (
            Check(
                "engine",
                "warn",
                f"{exc.message}: `falemu up` runs apps as host processes{on_gpus}",
                f"{exc.hint}; or keep the process runtime (--runtime process) and its limits",
            ),
            None,
        )
    version = client.version()
    detail = (
        f"Docker {version.get('Version', '?')} (API {version.get('ApiVersion', '?')}) at {docker_host(base_url)}, "
        f"{version.get('Os', '?')}/{normalize_arch(version.get('Arch'))}"
    )
    return Check("engine", "ok", detail), client


def probe_gpu(client: Any, image: str | None = None, gpus: HostGpus | None = None) -> Check:
    """Ask the engine for one GPU with a throwaway container; it never runs a process that matters."""
    from docker.errors import APIError, ImageNotFound
    from docker.types import DeviceRequest

    if image is None:
        candidates = [t for img in client.images.list() for t in img.tags]
        if not candidates:
            return Check("gpu", "warn", "no local image to probe GPU support with", "build an app first")
        image = candidates[0]
    container = None
    try:
        container = client.containers.create(
            image,
            command=["true"],
            entrypoint=[],
            labels={labels.APP: "falemu-doctor", labels.OWNER: labels.owner_label(), labels.VERSION: "probe"},
            device_requests=[DeviceRequest(count=1, capabilities=[["gpu"]])],
        )
        container.start()
    except ImageNotFound:
        return Check("gpu", "warn", f"probe image {image} not found", None)
    except APIError as exc:
        text = first_line(str(exc.explanation or exc))
        if is_no_gpu_error(text):
            if gpus is not None and gpus.count:
                return Check(
                    "gpu",
                    "warn",
                    f"the engine cannot pass this host's {gpus.count} GPU(s) through to containers (no NVIDIA "
                    f"runtime; it answers {text}): GPU apps start on CPU in containers",
                    TOOLKIT_HINT,
                )
            return Check(
                "gpu",
                "warn",
                f"no GPU support: the engine answers {text}; GPU apps start on CPU",
                "install the NVIDIA Container Toolkit and restart dockerd to pass GPUs through",
            )
        # Any other failure happened after the engine accepted the GPU request (the probe's `true`).
    finally:
        if container is not None:
            try:
                container.remove(force=True)
            except APIError:
                pass
    count = detect_gpu_count(True)
    known = f"{count} GPU(s)" if count is not None else "GPU count unknown (set FALEMU_GPU_COUNT)"
    return Check("gpu", "ok", f"the engine accepts GPU device requests; {known}")


def check_arch(client: Any) -> Check:
    engine = normalize_arch(client.info().get("Architecture"))
    host = normalize_arch(platform.machine())
    mismatches = []
    for image in client.images.list(filters={"label": labels.APP}):
        warning = arch_mismatch(image.attrs.get("Architecture"), engine)
        if warning:
            mismatches.append(f"{(image.tags or [image.short_id])[0]}: {warning}")
    if mismatches:
        return Check("arch", "warn", "; ".join(mismatches), "build for the engine's architecture (--platform)")
    if host and engine and host != engine:
        return Check("arch", "warn", f"this machine is {host} but the engine runs {engine}", None)
    return Check("arch", "ok", f"engine and images are {engine}")


def check_data_dir(path: Path) -> Check:
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".falemu-doctor-"):
            pass
    except OSError as exc:
        return Check(
            "data", "fail", f"{path} is not writable ({exc.strerror})", "set FALEMU_DATA_DIR to a writable folder"
        )
    return Check("data", "ok", f"{path} is writable (mounted at /data in every runner)")


def check_port(host: str, port: int) -> Check:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        if os.name != "nt":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                served = _served_by_falemu(port)
                if served is not None:  # this machine runs falemu: the port is taken by the right program
                    return Check(
                        "port",
                        "warn",
                        f"gateway port {host}:{port} is served by {served}",
                        "a second falemu up needs another --port (or FALEMU_PORT)",
                    )
            why = "in use" if exc.errno == errno.EADDRINUSE else exc.strerror
            return Check("port", "fail", f"gateway port {host}:{port} is {why}", "pass --port or set FALEMU_PORT")
    return Check("port", "ok", f"gateway port {host}:{port} is free")


def _served_by_falemu(port: int) -> str | None:
    """``falemu up (pid N, project P)`` when a running falemu up of this user serves ``port``."""
    from urllib.parse import urlsplit

    from falemu import state

    for instance in state.instances():
        try:
            if urlsplit(instance.url).port == port:
                return f"falemu up (pid {instance.pid}, project {instance.project})"
        except ValueError:
            continue
    return None


def run_checks(settings: Settings, base_url: str | None = None, gpu_image: str | None = None) -> list[Check]:
    gpus = list_host_gpus()
    engine, client = check_engine(base_url, runtime=settings.runtime, gpus=gpus)
    checks = [engine, check_host_gpus(gpus)]
    if client is not None:
        try:
            checks.append(probe_gpu(client, gpu_image, gpus))
            checks.append(check_arch(client))
        finally:
            client.close()
    checks.append(check_data_dir(settings.data_dir))
    checks.append(check_port(settings.host, settings.port))
    return checks
