"""The Runtime interface: how a parsed app becomes running runners.

Two implementations: :class:`falemu.runtime.docker.DockerRuntime` (the real path: image build,
containers, GPU device requests) and :class:`falemu.runtime.process.ProcessRuntime` (runners as host
subprocesses, when no engine answers). The gateway and the scaling controller drive runners only
through this interface; they never import docker.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from falemu.config.model import AppConfig
from falemu.config.settings import GpuMode
from falemu.events import EventSink, null_sink


@dataclass(frozen=True)
class PreparedApp:
    """An app whose image is built or found: what every runner of it starts from."""

    app: AppConfig
    image: str | None  # image id or reference; None for the process runtime
    built: bool  # False when an existing image was reused
    build_seconds: float = 0.0
    arch: str | None = None


@dataclass(frozen=True)
class RunnerSpec:
    prepared: PreparedApp
    runner_id: str
    owner: str  # the fal owner part of URLs: FAL_APP_NAME=<owner>/<alias>
    data_dir: Path
    gpu: GpuMode = "auto"
    machine_limits: bool = False
    env: Mapping[str, str] = field(default_factory=dict)  # extra environment (secrets resolved)
    # Extra bind mounts, host path -> path in the runner (read-write). The docker runtime mounts them;
    # the process runtime cannot (its runners see the host's files as they are) and says so once.
    mounts: Mapping[str, str] = field(default_factory=dict)
    command: tuple[str, ...] | None = None  # --cmd override for the process runtime
    on_log: Callable[[str], None] | None = None  # receives each log line while the runner lives (then the
    # runtime emits no RunnerLog events of its own: the caller says what a line means)
    startup_timeout: float | None = None  # overrides the app's scaling.startup_timeout
    keep_failed: bool = False  # leave a runner that failed to start in place for inspection
    # /data as fal gives it ("rw"), or broken on purpose by a fault (falemu.chaos): "read-only", or
    # "full" (an empty file system with no room left; the shared folder is not visible then).
    data_mode: str = "rw"


@dataclass
class Runner:
    """A started runner. ``host``/``port`` is where falemu reaches its exposed port."""

    id: str
    app: str
    host: str
    port: int
    timeline: dict[str, float] = field(default_factory=dict)  # phase -> seconds taken
    early: bool = False  # its container was begun as `falemu up` started, from the last run's plan (prelaunch)
    gpu_ids: tuple[str, ...] = ()
    handle: object = None  # the runtime's own handle (container, Popen)
    holder: int = 0  # the process that holds host:port (falemu.runtime.addresses); 0: not checked

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


class Runtime(Protocol):
    name: str

    def prepare(self, app: AppConfig, events: EventSink = null_sink, verbose: bool = False) -> PreparedApp:
        """Build or find the app's image. Reuses an unchanged image without building."""
        ...

    def start(self, spec: RunnerSpec, events: EventSink = null_sink) -> Runner:
        """Start one runner and wait until it is ready; raise RunnerError/StartupTimeout otherwise."""
        ...

    def stop(self, runner: Runner, grace: float | None = None) -> None:
        """SIGTERM, wait ``grace`` seconds (the app's termination grace period), kill, remove."""
        ...

    def logs(self, runner: Runner, follow: bool = False) -> Iterator[str]:
        """The runner's log lines."""
        ...

    def is_alive(self, runner: Runner) -> bool: ...

    def close(self) -> None:
        """Stop every runner this runtime started."""
        ...
