"""A testcontainers container for a fal app from ``pyproject.toml``, for suites that already use testcontainers.

::

    from falemu.testcontainers import FalAppContainer

    with FalAppContainer("greeter", project="path/to/project") as app:
        httpx.post(app.get_url() + "/greet", json={"name": "fal"})

The image is built the way ``falemu up`` builds it (fal's build context and ignore rules, cached by
content), the container gets the environment a fal runner gets, and start-up waits with falemu's
readiness probe: ``health_check.path`` answering 2xx when the app has one, otherwise any HTTP answer on
the exposed port. A server that listens on 127.0.0.1 only fails at once with fal's 0.0.0.0 advice.
This talks straight to the container, without the gateway, the queue or auth; use the ``falemu``
pytest fixtures for those.
"""

from __future__ import annotations

import secrets
from datetime import timedelta
from pathlib import Path
from typing import Any

from testcontainers.core.container import DockerContainer
from testcontainers.core.waiting_utils import WaitStrategy, WaitStrategyTarget

from falemu.config import AppConfig, get_app, load_project
from falemu.errors import RunnerError, StartupTimeout
from falemu.runtime import labels
from falemu.runtime.environment import resolve_secrets, runner_environment
from falemu.runtime.readiness import Exited, NotReady, ReadinessProbe, listening_sockets, loopback_message

__all__ = ["FalAppContainer", "FalReadiness"]

DEFAULT_PORT = 8080


class FalReadiness(WaitStrategy):
    """Wait as fal does: the exposed port answers HTTP (``health_path`` with a 2xx when given)."""

    def __init__(self, port: int, health_path: str | None, app: str) -> None:
        super().__init__()
        self.port = port
        self.health_path = health_path
        self.app = app

    def wait_until_ready(self, container: WaitStrategyTarget) -> None:
        host = container.get_container_host_ip()
        host_port = container.get_exposed_port(self.port)
        interval = max(0.02, min(self._poll_interval, 0.2))
        probe = ReadinessProbe(host, host_port, self.health_path, poll_interval=interval)

        def exited() -> Exited | None:
            try:
                container.reload()
                state = container.get_wrapped_container().attrs.get("State", {})
            except Exception:
                return Exited(None, "the container was removed")
            if state.get("Running") or state.get("Status") in ("created", "restarting"):
                return None
            return Exited(state.get("ExitCode"), state.get("Error") or "")

        def diagnose() -> str | None:
            try:
                result = container.get_wrapped_container().exec_run(["cat", "/proc/net/tcp", "/proc/net/tcp6"])
                output = result.output.decode(errors="replace")
            except Exception:
                return None
            return loopback_message(listening_sockets(output), self.port)

        try:
            probe.wait(self._startup_timeout, exited=exited, diagnose=diagnose)
        except NotReady as exc:
            out, err = container.get_logs()
            logs = (out + err).decode(errors="replace")
            last = logs.strip().splitlines()[-1] if logs.strip() else "(no output)"
            if exc.reason == "diagnosed":
                raise RunnerError(
                    f"{self.app}: {exc.message}",
                    hint="bind the server to 0.0.0.0 (for example uvicorn --host 0.0.0.0)",
                    logs=logs,
                ) from None
            if exc.reason == "exited":
                code = exc.exited.code if exc.exited else None
                raise RunnerError(
                    f"{self.app} exited during start-up" + (f" with code {code}" if code is not None else ""),
                    hint=f"its last log line: {last}",
                    logs=logs,
                    exit_code=code,
                ) from None
            raise StartupTimeout(
                f"{self.app} was not ready within {self._startup_timeout:g} s",
                hint=f"its last log line: {last}",
                logs=logs,
            ) from None


class FalAppContainer(DockerContainer):
    """The app ``app_name`` of the project's pyproject, built and started as one runner container.

    ``project`` is a project folder or a pyproject.toml (default: discovered from the current folder,
    as fal does). ``startup_timeout`` defaults to the app's own ``startup_timeout``. The image is built
    on :meth:`start`, so creating the object is cheap.
    """

    def __init__(
        self,
        app_name: str,
        project: str | Path | None = None,
        *,
        owner: str = "local",
        startup_timeout: float | None = None,
        env: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> None:
        self.app: AppConfig = get_app(load_project(project), app_name)
        self.runner_id = f"tc-{secrets.token_hex(4)}"
        super().__init__(image=f"falemu-{self.app.alias}:unbuilt", **kwargs)
        self.port = self.app.exposed_port or DEFAULT_PORT
        self.with_exposed_ports(self.port)
        found, _missing = resolve_secrets(self.app)
        variables = runner_environment(self.app, owner=owner, runner_id=self.runner_id, secrets=found, extra=env)
        variables["FAL_RUNNER_STATE"] = "RUNNING"
        self.with_envs(**variables)
        image_cfg = self.app.image
        if image_cfg is not None and image_cfg.cmd:
            self.with_command(list(image_cfg.cmd))
        extra: dict[str, Any] = {"labels": labels.runner_labels(self.app.alias, self.runner_id, self.app.project_root)}
        if image_cfg is not None and image_cfg.entrypoint:
            extra["entrypoint"] = list(image_cfg.entrypoint)
        self.with_kwargs(**{**extra, **self._kwargs})
        timeout = startup_timeout if startup_timeout is not None else float(self.app.scaling.startup_timeout)
        health = self.app.health_check.path if self.app.health_check else None
        readiness = FalReadiness(self.port, health, self.app.alias)
        self.waiting_for(readiness.with_startup_timeout(timedelta(seconds=timeout)))
        self.prepared_image: str | None = None

    def build(self) -> str:
        """Build (or reuse) the app's image as ``falemu up`` does; returns the image id."""
        from falemu.runtime.docker import DockerRuntime

        runtime = DockerRuntime(reap=False, gpu_count=0)
        try:
            prepared = runtime.prepare(self.app)
        finally:
            runtime.client.close()
        assert prepared.image is not None
        self.prepared_image = prepared.image
        return prepared.image

    def start(self) -> FalAppContainer:
        self.image = self.prepared_image or self.build()
        super().start()
        return self

    def get_url(self) -> str:
        """``http://host:port`` of the app's exposed port."""
        host = self.get_container_host_ip()
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.get_exposed_port(self.port)}"
