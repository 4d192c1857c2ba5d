"""Connecting to the Docker engine, and where its published ports are reachable from here."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from falemu.errors import EngineUnavailable

if TYPE_CHECKING:
    import docker

MINIMUM_API = "1.24"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "0.0.0.0", ""})


def docker_host(base_url: str | None = None) -> str:
    """The engine address in effect: ``base_url``, else ``$DOCKER_HOST``, else the default socket."""
    return base_url or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def engine_address(base_url: str | None = None) -> str:
    """The host at which published container ports are reachable.

    ``tcp://x:2376`` and ``ssh://user@x`` mean ``x``; a unix socket or named pipe means this machine.
    """
    url = docker_host(base_url)
    parsed = urlparse(url)
    if parsed.scheme in ("tcp", "http", "https", "ssh") and parsed.hostname:
        return "127.0.0.1" if parsed.hostname in ("localhost", "0.0.0.0") else parsed.hostname
    return "127.0.0.1"


def engine_is_local(base_url: str | None = None) -> bool:
    return engine_address(base_url) in LOOPBACK_HOSTS


def connect(base_url: str | None = None, timeout: int = 120) -> docker.DockerClient:
    """A client for the engine, or :class:`EngineUnavailable` naming the address that did not answer."""
    import docker
    from docker.errors import DockerException

    url = docker_host(base_url)
    try:
        params: dict[str, Any] = {"base_url": base_url} if base_url else docker.utils.kwargs_from_env()
        tls = params.get("tls")
        if tls is not None and tls.verify and tls.ca_cert:
            # A TLS engine with its own CA (DOCKER_CERT_PATH): requests lets REQUESTS_CA_BUNDLE replace
            # that CA on every call unless the session ignores the environment, so the API version is
            # asked only after that is switched off.
            client = docker.DockerClient(**params, version=MINIMUM_API, timeout=timeout, max_pool_size=32)
            client.api.trust_env = False
            client.api._version = client.api.version(api_version=False)["ApiVersion"]
        else:
            client = docker.DockerClient(**params, timeout=timeout, max_pool_size=32)
        client.ping()
    except (DockerException, OSError) as exc:
        raise unavailable(url, exc) from None
    return client


def unavailable(url: str, exc: BaseException) -> EngineUnavailable:
    """The error for an engine at ``url`` that did not answer, with why (from ``exc``) and what to do."""
    reason, hint = _why(str(exc))
    return EngineUnavailable(f"no Docker engine answers at {url} ({reason})", hint=hint)


def _why(text: str) -> tuple[str, str]:
    default_hint = "start Docker (or set DOCKER_HOST), or run with --runtime process"
    if "FileNotFoundError" in text or "No such file" in text:
        return "the socket does not exist", default_hint
    if "PermissionError" in text or "Permission denied" in text:
        return "permission denied on the socket", "add your user to the docker group, or run with --runtime process"
    if "Connection refused" in text:
        return "connection refused", default_hint
    if "CERTIFICATE" in text or "SSL" in text:
        return "TLS failed: " + first_line(text, 160), "check DOCKER_CERT_PATH and DOCKER_TLS_VERIFY"
    return first_line(text), default_hint


def first_line(text: str, limit: int = 300) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def normalize_arch(arch: str | None) -> str | None:
    """Docker's architecture names: ``x86_64`` -> ``amd64``, ``aarch64`` -> ``arm64``."""
    if not arch:
        return None
    table = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i386": "386", "i686": "386"}
    return table.get(arch.lower(), arch.lower())


def arch_mismatch(image_arch: str | None, host_arch: str | None) -> str | None:
    """A warning when an image of one architecture would run emulated on an engine of another."""
    image, host = normalize_arch(image_arch), normalize_arch(host_arch)
    if not image or not host or image == host:
        return None
    return (
        f"the image is built for {image} but the engine runs on {host}: it runs under emulation, slowly, "
        f"and fal's {image} machines may behave differently"
    )
