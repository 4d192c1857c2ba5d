"""The Docker Engine API calls on a runner's way to ready, without importing the Docker SDK first.

Importing the Docker SDK (and with it requests and urllib3) takes 0.1-0.3 s of CPU, more than the
engine takes to create and start a container. The calls a cached image's runner needs on its way
to ready (ping, engine info, image, network and container inspection, container create and start,
and the reaping of orphaned runners before it) therefore go through :class:`EngineAPI`, which
speaks the Engine API's JSON with the standard library's HTTP client when the engine is a unix
socket (the default, Docker Desktop, Colima, rootless) and through the SDK's own session otherwise
(tcp, TLS, ssh): one interface, and one error type, :class:`EngineCallError`, either way.
Everything else (builds, logs, exec, stop) uses the SDK, which
:class:`~falemu.runtime.docker.DockerRuntime` connects in the background once its first runner's
container started.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlparse

DEFAULT_SOCKET = "/var/run/docker.sock"
CALL_TIMEOUT = 60.0


class EngineCallError(Exception):
    """The engine answered an API call with an error: its HTTP status and its explanation."""

    def __init__(self, status: int, explanation: str) -> None:
        super().__init__(f"{status}: {explanation}")
        self.status = status
        self.explanation = explanation


def socket_path(base_url: str | None = None) -> str | None:
    """The engine's unix socket when ``base_url`` (else ``DOCKER_HOST``, else the default) is one."""
    url = base_url or os.environ.get("DOCKER_HOST") or f"unix://{DEFAULT_SOCKET}"
    parsed = urlparse(url)
    if parsed.scheme not in ("unix", "http+unix"):
        return None
    return parsed.path or None


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._socket_path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


class EngineAPI:
    """The engine calls of a runner's start, over a unix socket or (``sdk``) the Docker SDK's client."""

    def __init__(self, path: str | None = None, *, sdk: Callable[[], Any] | None = None) -> None:
        if (path is None) == (sdk is None):
            raise ValueError("EngineAPI takes either a socket path or an SDK client")
        self._path = path
        self._sdk = sdk
        self._prefix = ""  # /vX.Y once the engine said its version (ping)

    @property
    def path(self) -> str | None:
        """The engine's unix socket, or None when the calls go through the SDK."""
        return self._path

    @property
    def prefix(self) -> str:
        """The API version part of each call's path (``/v1.47``), once :meth:`ping` learnt it."""
        return self._prefix

    # -- the calls ---------------------------------------------------------------------------------

    def ping(self) -> None:
        """Raise OSError (socket) or the SDK's error when the engine does not answer."""
        if self._sdk is not None:
            self._sdk().api.ping()
            return
        connection = self._connection(timeout=10.0)
        try:
            connection.request("GET", "/_ping")
            answer = connection.getresponse()
            answer.read()
            version = answer.getheader("Api-Version") or ""
        finally:
            connection.close()
        if answer.status != 200:
            raise OSError(f"the engine answered {answer.status} to /_ping")
        if version.replace(".", "").isdigit():
            self._prefix = f"/v{version}"

    def info(self) -> dict[str, Any]:
        return dict(self._call("GET", "/info", sdk=lambda c: c.api.info()) or {})

    def image(self, ref: str) -> dict[str, Any] | None:
        """The image's inspection (``docker image inspect``), or None when the engine has no such image."""
        found: dict[str, Any] | None = self._call(
            "GET", f"/images/{quote(ref, safe=':/@')}/json", sdk=lambda c: c.api.inspect_image(ref)
        )
        return found

    def has_image(self, ref: str) -> bool:
        return self.image(ref) is not None

    def container(self, container_id: str) -> dict[str, Any] | None:
        """The container's inspection, or None when it is gone."""
        found: dict[str, Any] | None = self._call(
            "GET", f"/containers/{quote(container_id)}/json", sdk=lambda c: c.api.inspect_container(container_id)
        )
        return found

    def network(self, name: str) -> dict[str, Any] | None:
        """The network's inspection (``docker network inspect``), or None when there is no such network."""
        found: dict[str, Any] | None = self._call(
            "GET", f"/networks/{quote(name)}", sdk=lambda c: c.api.inspect_network(name)
        )
        return found

    def containers(self, label: str) -> list[dict[str, Any]]:
        """Every container (running or not) with ``label`` (``key`` or ``key=value``), as ``docker ps -a``."""
        filters = json.dumps({"label": [label]})
        found = self._call(
            "GET",
            f"/containers/json?all=1&filters={quote(filters)}",
            sdk=lambda c: c.api.containers(all=True, filters={"label": label}),
        )
        return list(found or [])

    def remove(self, container_id: str) -> bool:
        """Force-remove the container with its anonymous volumes; False when it was gone or going already."""
        try:
            self._call(
                "DELETE",
                f"/containers/{quote(container_id)}?force=1&v=1",
                sdk=lambda c: c.api.remove_container(container_id, force=True, v=True),
                missing_is_none=False,
            )
        except EngineCallError as exc:
            if exc.status in (404, 409):  # 409: its removal is already in progress
                return False
            raise
        return True

    def create(self, name: str, config: dict[str, Any]) -> str:
        """Create a container from Engine API ``config`` (``POST /containers/create``); its id."""
        created = self._call(
            "POST",
            f"/containers/create?name={quote(name)}",
            config,
            sdk=lambda c: c.api.create_container_from_config(config, name),
            missing_is_none=False,
        )
        assert created is not None
        return str(created["Id"])

    def start(self, container_id: str) -> None:
        self._call(
            "POST",
            f"/containers/{quote(container_id)}/start",
            sdk=lambda c: c.api.start(container_id),
            missing_is_none=False,
        )

    # -- transport ---------------------------------------------------------------------------------

    def _connection(self, timeout: float = CALL_TIMEOUT) -> _UnixConnection:
        assert self._path is not None
        return _UnixConnection(self._path, timeout)

    def _call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        sdk: Callable[[Any], Any],
        missing_is_none: bool = True,
    ) -> Any:
        if self._sdk is not None:
            return self._sdk_call(sdk, missing_is_none)
        connection = self._connection()
        try:
            data = json.dumps(body).encode() if body is not None else None
            headers = {"Content-Type": "application/json"} if data is not None else {}
            connection.request(method, self._prefix + path, body=data, headers=headers)
            answer = connection.getresponse()
            raw = answer.read()
        finally:
            connection.close()
        if answer.status == 404 and missing_is_none:
            return None
        if answer.status >= 400:
            raise EngineCallError(answer.status, _explanation(raw))
        return json.loads(raw) if raw.strip() else None

    def _sdk_call(self, call: Callable[[Any], Any], missing_is_none: bool) -> Any:
        assert self._sdk is not None
        try:
            return call(self._sdk())
        except Exception as exc:
            error = as_call_error(exc)
            if error is None:
                raise
            if error.status == 404 and missing_is_none:
                return None
            raise error from None


def _explanation(raw: bytes) -> str:
    text = raw.decode(errors="replace").strip()
    try:
        message = json.loads(text).get("message")
    except (ValueError, AttributeError):
        return text
    return str(message) if message else text


def as_call_error(exc: BaseException) -> EngineCallError | None:
    """An SDK error (``docker.errors.APIError``) as an :class:`EngineCallError`; None for anything else.

    Imports nothing: an SDK error exists only once the SDK was imported.
    """
    if isinstance(exc, EngineCallError):
        return exc
    response = getattr(exc, "response", None)
    status = getattr(exc, "status_code", None)
    if status is None and response is not None:
        status = getattr(response, "status_code", None)
    if not isinstance(status, int) or type(exc).__module__ != "docker.errors":
        return None
    return EngineCallError(status, str(getattr(exc, "explanation", None) or exc))
