"""Typed, frozen results of parsing ``[tool.fal.apps.<name>]`` and falemu's own settings."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from falemu.errors import ConfigError

if TYPE_CHECKING:
    from falemu.config.falapp import FalApp

Source = Literal["pyproject", "default", "class", "derived"]  # "class": read off a fal.App class


class AppShape(enum.Enum):
    """The three app shapes fal's pyproject parser knows."""

    DIRECT_SERVER = "direct-server"  # image table, no ref: fal forwards all traffic to exposed_port
    FAL_APP = "fal-app"  # ref = "path.py::Class"
    ENTRY_POINT = "entry-point"  # python_entry_point = "pkg.mod:Class"


@dataclass(frozen=True)
class RegistryAuth:
    username: str
    password: str  # as written; "$NAME" means the environment variable NAME


@dataclass(frozen=True)
class ImageConfig:
    """The ``image`` sub-table: exactly one of ``dockerfile`` and ``image``."""

    dockerfile: Path | None = None  # absolute path
    image: str | None = None
    build_args: Mapping[str, str] = field(default_factory=dict)
    secrets: Mapping[str, str] = field(default_factory=dict)
    registries: Mapping[str, RegistryAuth] = field(default_factory=dict)
    # entrypoint/cmd: a toml string is split with shlex.split (as the docker SDK splits a string command);
    # a toml list is kept as written.
    entrypoint: tuple[str, ...] | None = None
    cmd: tuple[str, ...] | None = None
    use_isolate: bool | None = None  # False for direct-server apps: no fal runtime injected
    context_dir: Path | None = None  # the build context: always the pyproject folder for toml apps


@dataclass(frozen=True)
class HealthCheckConfig:
    path: str
    start_period_seconds: int | None = None
    timeout_seconds: int | None = None
    failure_threshold: int | None = None
    call_regularly: bool | None = None
    method: str | None = None


@dataclass(frozen=True)
class ScalingConfig:
    """Scale settings with fal's server defaults filled in where the pyproject is silent."""

    keep_alive: int = 10
    min_concurrency: int = 0
    max_concurrency: int = 2
    max_multiplexing: int = 1
    concurrency_buffer: int = 0
    concurrency_buffer_perc: int = 0
    scaling_delay: int = 0
    request_timeout: int = 3600
    request_start_timeout: int | None = None
    startup_timeout: int = 600
    termination_grace_period_seconds: int = 5


@dataclass(frozen=True)
class AppConfig:
    """One ``[tool.fal.apps.<name>]`` table, as fal 1.83.0 would read it, with defaults resolved."""

    name: str  # the table key, used by `fal deploy <name>`
    alias: str  # the deployed app name: `name` key, else the table key
    shape: AppShape
    project_root: Path
    ref: str | None = None
    python_entry_point: str | None = None
    image: ImageConfig | None = None
    exposed_port: int | None = None
    auth: str | None = None  # as written; None means fal's deploy default, private
    machine_types: tuple[str, ...] = ("XS",)
    num_gpus: int | None = None
    regions: tuple[str, ...] = ()
    secrets: tuple[str, ...] = ()
    data_mounts: tuple[str, ...] | None = None
    health_check: HealthCheckConfig | None = None
    private_logs: bool | None = None
    skip_retry_conditions: tuple[str, ...] = ()
    retry_config: Mapping[str, Any] = field(default_factory=dict)
    scaling: ScalingConfig = field(default_factory=ScalingConfig)
    raw: Mapping[str, Any] = field(default_factory=dict)  # the table as written
    sources: Mapping[str, Source] = field(default_factory=dict)  # key -> where its value came from
    warnings: tuple[str, ...] = ()  # what fal would reject later (auth, machine_type, numbers...)
    pyproject: Path | None = None
    metrics_port: int | None = None
    deployment_strategy: str | None = None  # as written; fal's default is "rolling"
    team: str | None = None
    reset_scale: bool = False  # app_scale_settings (or `not no_scale`)
    requirements: tuple[Any, ...] = ()  # strings, or lists of strings (one install step each)
    requirements_context_dir: Path | None = None
    python_version: str | None = None
    app_files: tuple[str, ...] = ()
    app_files_ignore: tuple[str, ...] | None = None
    app_files_context_dir: Path | None = None
    fal_app: FalApp | None = None  # a fal.App as fal's loader read it (falemu.config.falapp), once loaded

    @property
    def effective_auth(self) -> str:
        """The auth mode the app runs with: `fal deploy` makes an app private when none is set."""
        return self.auth if self.auth in ("public", "private", "shared") else "private"

    @property
    def uses_fal_runtime(self) -> bool:
        """False for direct-server apps, whose container runs its own ENTRYPOINT/CMD."""
        return self.shape is not AppShape.DIRECT_SERVER

    @property
    def wants_gpu(self) -> bool:
        return bool(self.num_gpus) or any(m.upper().startswith("GPU") for m in self.machine_types)

    @property
    def gpu_count(self) -> int:
        return self.num_gpus or (1 if self.wants_gpu else 0)


@dataclass(frozen=True)
class Project:
    """A project folder with its pyproject and every app it declares.

    ``apps`` maps every app name to its config. As in fal, each app is parsed on its own: the mapping
    that :func:`falemu.config.load_project` returns parses an app when it is first looked up, so
    ``project.apps["greeter"]`` (or :meth:`app`) raises :class:`~falemu.errors.ConfigError` for a
    broken ``greeter`` only, and listing names or using another app never touches it.
    """

    root: Path
    pyproject: Path
    apps: Mapping[str, AppConfig]
    falemu: Mapping[str, Any] = field(default_factory=dict)  # the raw [tool.falemu] table

    @property
    def app_names(self) -> tuple[str, ...]:
        """Every ``[tool.fal.apps.<name>]`` in file order, without parsing any."""
        return tuple(self.apps)

    def app(self, name: str) -> AppConfig:
        """The parsed app ``name``; ConfigError with fal's message if it is missing or invalid."""
        if name not in self.apps:
            names = ", ".join(self.app_names) or "none"
            raise ConfigError(
                f"App {name} not found in pyproject.toml",
                hint=f"apps in {self.pyproject}: {names}",
            )
        return self.apps[name]
