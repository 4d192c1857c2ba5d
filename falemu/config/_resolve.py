"""Turn a table fal accepted into an :class:`AppConfig`: defaults, shapes, and warnings.

Defaults follow fal 1.83.0 and its servers (``SERVER_DEFAULT_SCALE_VALUES``): keep_alive 10 and
machine type XS for direct-server and entry-point apps; a ``ref`` app gets fal.App's class defaults
(keep_alive 60, machine type S; a class that sets its own values wins on fal, which falemu cannot see
without importing the app). ``exposed_port`` defaults to 8080 for apps that run fal's server and has no
default for a direct server.

Values fal accepts when parsing but rejects or ignores later (an unknown ``auth``, a string
``min_concurrency``, an unknown machine type...) do not fail here: each becomes a warning that says
what fal will do, and falemu uses the default instead.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from falemu.config._image import IMAGE_KEYS, ParsedImage
from falemu.config._keys import APP_KEYS, HEALTH_CHECK_KEYS
from falemu.config._validators import AUTH_MODES, DEPLOYMENT_STRATEGIES
from falemu.config.model import (
    AppConfig,
    AppShape,
    HealthCheckConfig,
    ImageConfig,
    RegistryAuth,
    ScalingConfig,
    Source,
)
from falemu.errors import ConfigError

FAL_APP_KEEP_ALIVE = 60
FAL_APP_MACHINE_TYPE = "S"
DEFAULT_KEEP_ALIVE = 10
DEFAULT_MACHINE_TYPE = "XS"
FAL_APP_PORT = 8080
DEFAULT_METRICS_PORT = 9090

# Machine types fal documents (fal.App docstring and docs); the server's accepted set is not public.
KNOWN_MACHINE_TYPES = frozenset(
    {
        "XS",
        "S",
        "M",
        "L",
        "XL",
        "GPU-A6000",
        "GPU-A10G",
        "GPU-A100",
        "GPU-H100",
        "GPU-H200",
        "GPU-B200",
        "GPU-L40",
        "GPU-RTX4090",
        "GPU-RTX5090",
    }
)
HTTP_METHODS = frozenset({"GET", "POST", "HEAD", "PUT", "PATCH", "DELETE", "OPTIONS"})

_INT_KEYS = (
    "min_concurrency",
    "max_concurrency",
    "max_multiplexing",
    "concurrency_buffer",
    "concurrency_buffer_perc",
    "scaling_delay",
    "request_timeout",
    "request_start_timeout",
    "startup_timeout",
    "num_gpus",
)


@dataclass(frozen=True)
class ParsedApp:
    """What :func:`falemu.config.parser.parse_app` collected, values as written."""

    name: str
    project_root: Path
    pyproject: Path
    raw: Mapping[str, Any]
    ref: str | None
    python_entry_point: str | None
    image: ParsedImage | None
    health_check: HealthCheckConfig | None
    values: Mapping[str, Any]
    requirements_context_dir: Path | None
    reset_scale: Any
    no_scale_used: bool


_INT32_MAX = 2**31 - 1  # MachineRequirements fields are int32 on the wire


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class _Resolver:
    def __init__(self, parsed: ParsedApp) -> None:
        self.p = parsed
        self.v = parsed.values
        self.warnings: list[str] = []

    def warn(self, text: str) -> None:
        self.warnings.append(text)

    def shape(self) -> AppShape:
        if self.p.python_entry_point is not None:
            return AppShape.ENTRY_POINT
        if self.p.ref is not None:
            return AppShape.FAL_APP
        return AppShape.DIRECT_SERVER

    def integer(self, key: str, default: int | None) -> int | None:
        value = self.v.get(key)
        if value is None:
            return default
        if not _is_int(value):
            self.warn(
                f"{key} = {value!r} is not an integer: fal accepts it in pyproject.toml but `fal deploy` fails "
                f"when it sends it; falemu uses {default if default is not None else 'no value'}"
            )
            return default
        if value > _INT32_MAX:
            self.warn(
                f"{key} = {value} does not fit the int32 fal sends it as: `fal deploy` fails; "
                f"falemu uses {default if default is not None else 'no value'}"
            )
            return default
        if value < 0:
            self.warn(f"{key} = {value} is negative: fal does not check it before deploy; falemu uses 0")
            return 0
        if value == 0 and key in ("request_timeout", "startup_timeout"):
            self.warn(
                f"{key} = 0: fal sends it, but what its server does with 0 is not documented; falemu uses {default}"
            )
            return default
        return int(value)

    def scaling(self, shape: AppShape) -> ScalingConfig:
        base = ScalingConfig()
        keep_alive_default = FAL_APP_KEEP_ALIVE if shape is AppShape.FAL_APP else DEFAULT_KEEP_ALIVE
        keep_alive = self.v.get("keep_alive")  # fal checked it is an int
        if keep_alive is not None and keep_alive > _INT32_MAX:
            self.warn(
                f"keep_alive = {keep_alive} does not fit the int32 fal sends it as: `fal deploy` fails; "
                f"falemu uses {keep_alive_default}"
            )
            keep_alive = None
        if keep_alive is not None and keep_alive < 0:
            self.warn(f"keep_alive = {keep_alive} is negative: fal does not check it before deploy; falemu uses 0")
            keep_alive = 0
        ints = {key: self.integer(key, getattr(base, key)) for key in _INT_KEYS if key != "num_gpus"}
        if ints["request_start_timeout"] == 0:  # fal: 0 clears the setting
            ints["request_start_timeout"] = None
        if ints["max_multiplexing"] == 0:
            self.warn("max_multiplexing = 0 lets no request reach a runner; falemu uses 1")
            ints["max_multiplexing"] = 1
        if ints["max_concurrency"] == 0:
            self.warn("max_concurrency = 0 lets no runner start: every request waits in the queue")
        low, high = ints["min_concurrency"], ints["max_concurrency"]
        if low is not None and high is not None and low > high:
            self.warn(
                f"min_concurrency ({low}) is above max_concurrency ({high}): fal does not check this; "
                f"falemu keeps at most {high} runners"
            )
        grace = self.v.get("termination_grace_period_seconds")  # fal checked it is an int
        if grace is not None and grace > _INT32_MAX:
            self.warn(
                f"termination_grace_period_seconds = {grace} does not fit the int32 fal sends it as: "
                "`fal deploy` fails; falemu uses 5"
            )
            grace = None
        return ScalingConfig(
            keep_alive=keep_alive if keep_alive is not None else keep_alive_default,
            min_concurrency=ints["min_concurrency"] or 0,
            max_concurrency=ints["max_concurrency"] if ints["max_concurrency"] is not None else base.max_concurrency,
            max_multiplexing=ints["max_multiplexing"] or 1,
            concurrency_buffer=ints["concurrency_buffer"] or 0,
            concurrency_buffer_perc=ints["concurrency_buffer_perc"] or 0,
            scaling_delay=ints["scaling_delay"] or 0,
            request_timeout=ints["request_timeout"] or base.request_timeout,
            request_start_timeout=ints["request_start_timeout"],
            startup_timeout=ints["startup_timeout"] or base.startup_timeout,
            termination_grace_period_seconds=max(grace, 0) if grace is not None else 5,
        )

    def machine_types(self, shape: AppShape) -> tuple[str, ...]:
        default = (FAL_APP_MACHINE_TYPE if shape is AppShape.FAL_APP else DEFAULT_MACHINE_TYPE,)
        value = self.v.get("machine_type")
        if value is None:
            return default
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            self.warn(
                f"machine_type = {value!r}: `fal deploy` fails with 'machine_types must be a list of strings.'; "
                f"falemu uses {default[0]}"
            )
            return default
        if not value:
            self.warn(
                f"machine_type = []: `fal deploy` fails with 'No machine type provided.'; falemu uses {default[0]}"
            )
            return default
        if not all(isinstance(item, str) for item in value):
            self.warn(
                f"machine_type = {value!r} has a non-string entry: `fal deploy` fails when it sends it; "
                f"falemu uses {default[0]}"
            )
            return default
        for item in value:
            if item not in KNOWN_MACHINE_TYPES:
                self.warn(
                    f"machine_type {item!r} is not a machine type fal documents "
                    f"({', '.join(sorted(KNOWN_MACHINE_TYPES))}): fal does not check it before deploy, "
                    "and its server rejects names it does not know"
                )
        return tuple(value)

    def auth(self) -> str | None:
        value = self.v.get("auth")
        if value is None:
            return None
        if value not in AUTH_MODES:
            self.warn(
                f"auth = {value!r} is not one of public, private, shared: fal silently treats it as unset "
                "and `fal deploy` makes the app private"
            )
            return None
        return str(value)

    def text(self, key: str) -> str | None:
        value = self.v.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            self.warn(f"{key} = {value!r} is not a string: fal accepts it here but fails when it uses it")
            return str(value)
        return value

    def alias(self) -> str:
        value = self.v.get("name")
        if value is None:
            return _served_name(self.p.name, self.warn)
        if not isinstance(value, str):
            self.warn(f"name = {value!r} is not a string: `fal deploy` fails when it registers the app")
            return _served_name(str(value), self.warn)
        if not value:
            self.warn(f"name is empty: falemu serves the app as {self.p.name!r}")
            return _served_name(self.p.name, self.warn)
        return _served_name(value, self.warn)

    def image(self) -> ImageConfig | None:
        image = self.p.image
        if image is None:
            return None
        extra = image.passthrough
        return ImageConfig(
            dockerfile=image.dockerfile.absolute() if image.dockerfile is not None else None,
            image=image.image,
            build_args=self.string_table("image.build_args", extra.get("build_args")),
            secrets=self.string_table("image.secrets", extra.get("secrets")),
            registries={
                str(host): RegistryAuth(username=str(auth["username"]), password=str(auth["password"]))
                for host, auth in (extra.get("registries") or {}).items()
            },
            entrypoint=self.command("entrypoint", extra.get("entrypoint")),
            cmd=self.command("cmd", extra.get("cmd")),
            use_isolate=image.use_isolate,
            context_dir=image.context_dir.absolute(),
        )

    def string_table(self, key: str, value: Any) -> dict[str, str]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.warn(
                f"{key} = {value!r} is not a table: fal accepts it here but its image build fails; falemu ignores it"
            )
            return {}
        out: dict[str, str] = {}
        for name, item in value.items():
            if not isinstance(item, str):
                self.warn(f"{key}.{name} = {item!r} is not a string: fal's build may fail; falemu passes {str(item)!r}")
            out[str(name)] = item if isinstance(item, str) else str(item)
        return out

    def command(self, key: str, value: Any) -> tuple[str, ...] | None:
        if value is None:
            return None
        if isinstance(value, list):
            return tuple(value)
        try:
            return tuple(shlex.split(value))
        except ValueError as exc:
            self.warn(f"image.{key} = {value!r} cannot be split into words ({exc}); falemu runs it as one word")
            return (value,)

    def health_check(self) -> HealthCheckConfig | None:
        check = self.p.health_check
        if check is None or check.method is None:
            return check
        method: Any = check.method
        if not isinstance(method, str):
            self.warn(f"health_check.method = {method!r} is not a string: `fal deploy` fails when it sends it")
            return replace(check, method=None)
        if method.upper() not in HTTP_METHODS:
            self.warn(f"health_check.method = {method!r} is not an HTTP method fal's health checker can send")
        return replace(check, method=method.upper())

    def check_shape(self, shape: AppShape, exposed_port: int | None) -> None:
        if shape is AppShape.DIRECT_SERVER and exposed_port == 0:
            self.warn(
                "exposed_port = 0: fal accepts it, but no server listens on port 0, so fal has nowhere to forward "
                "traffic; falemu uses 8080 (set exposed_port to the port your server listens on)"
            )
        if shape is AppShape.DIRECT_SERVER and exposed_port is None:
            self.warn(
                "no exposed_port: fal accepts a direct-server app without one, but then has no port to forward "
                "traffic to; set exposed_port to the port your server listens on"
            )
        if shape is AppShape.FAL_APP and exposed_port not in (None, FAL_APP_PORT):
            self.warn(
                f"exposed_port = {exposed_port} on a fal.App: fal routes to it, but the fal.App server in the "
                "runner binds 8080 (only `fal run --local` honours exposed_port)"
            )
        entry = self.p.python_entry_point
        if entry is not None:
            module, _, symbol = entry.partition(":")
            if not module or not symbol:
                self.warn(
                    "python_entry_point must be in '<module>:<symbol>' format. "
                    "(fal accepts the table but fails with this when it loads the app)"
                )
        if self.p.ref is not None:
            file_part = self.p.ref.split("::", 1)[0]
            if not Path(file_part).is_file():
                self.warn(f"ref file {file_part} does not exist: `fal deploy` fails when it loads the app")
        if self.p.no_scale_used:
            self.warn("no_scale is deprecated, use app_scale_settings instead (fal prints this as a [WARNING])")
        if not isinstance(self.p.reset_scale, bool):
            self.warn(f"app_scale_settings = {self.p.reset_scale!r} is not a boolean: fal uses its truth value")

    def sources(self) -> dict[str, Source]:
        raw = self.p.raw
        sources: dict[str, Source] = {key: "pyproject" if key in raw else "default" for key in APP_KEYS}
        if "no_scale" not in raw:
            del sources["no_scale"]
        image = raw.get("image")
        if isinstance(image, dict):
            for key in IMAGE_KEYS:
                sources[f"image.{key}"] = "pyproject" if key in image else "default"
        check = raw.get("health_check")
        if isinstance(check, dict):
            for key in HEALTH_CHECK_KEYS:
                sources[f"health_check.{key}"] = "pyproject" if key in check else "default"
        return sources


_NOT_IN_A_SEGMENT = re.compile(r"[/?#%\\\s\x00-\x1f\x7f]")
_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_LONG_NAME = 63  # longer names are shortened in container and image names


def _served_name(name: str, warn: Callable[[str], None]) -> str:
    """The app's name as falemu serves it (``/{owner}/{name}``): one URL path segment, else a config error.

    fal checks nothing of the name before deploy; its server then answers "The app name may be invalid -
    try using --app-name with a simple kebab-case name". falemu refuses what it cannot serve at all and
    warns about the rest.
    """
    if not name or name in (".", "..") or _NOT_IN_A_SEGMENT.search(name):
        raise ConfigError(
            f"app name {name!r} cannot be served at /{{owner}}/{{app}}: it is not one URL path segment",
            hint='use a simple kebab-case name, for example name = "my-app" (what fal asks for, too)',
        )
    if not _PLAIN_NAME.fullmatch(name):
        warn(
            f"app name {name!r} is not only ASCII letters, digits, '-', '_' and '.': fal may refuse it "
            '("The app name may be invalid"); falemu serves it percent-encoded and uses an ASCII form in '
            "container and image names"
        )
    elif len(name) > _LONG_NAME:
        warn(
            f"app name {name[:20]}... is {len(name)} characters long: falemu shortens it in container and image "
            "names; a simple kebab-case name is what fal asks for"
        )
    return name


def _tuple(value: Any) -> tuple[Any, ...]:
    return tuple(tuple(item) if isinstance(item, list) else item for item in value) if value is not None else ()


def resolve_app(parsed: ParsedApp) -> AppConfig:
    r = _Resolver(parsed)
    v = parsed.values
    shape = r.shape()
    exposed_port: int | None = v.get("exposed_port")
    if exposed_port is None and shape is not AppShape.DIRECT_SERVER:
        exposed_port = FAL_APP_PORT
    metrics_port: int | None = v.get("metrics_port")
    if metrics_port is None and exposed_port is not None and shape is not AppShape.DIRECT_SERVER:
        metrics_port = DEFAULT_METRICS_PORT
    r.check_shape(shape, v.get("exposed_port"))
    auth = r.auth()
    strategy = r.text("deployment_strategy")
    if strategy is not None and strategy not in DEPLOYMENT_STRATEGIES:
        r.warn(
            f"deployment_strategy = {strategy!r} is not rolling or recreate: "
            "`fal deploy` fails when it registers the app"
        )
    num_gpus = r.integer("num_gpus", None)
    files_context = v.get("app_files_context_dir")
    alias = r.alias()
    image = r.image()
    machine_types = r.machine_types(shape)
    health_check = r.health_check()
    scaling = r.scaling(shape)
    team = r.text("team")
    return AppConfig(
        name=parsed.name,
        alias=alias,
        shape=shape,
        project_root=parsed.project_root,
        ref=parsed.ref,
        python_entry_point=parsed.python_entry_point,
        image=image,
        exposed_port=exposed_port,
        auth=auth,
        machine_types=machine_types,
        num_gpus=num_gpus,
        regions=_tuple(v.get("regions")),
        secrets=_tuple(v.get("secrets")),
        data_mounts=_tuple(v["data_mounts"]) if v.get("data_mounts") is not None else None,
        health_check=health_check,
        private_logs=v.get("private_logs"),
        skip_retry_conditions=_tuple(v.get("skip_retry_conditions")),
        retry_config=v.get("retry_config") or {},
        scaling=scaling,
        raw=parsed.raw,
        sources=r.sources(),
        warnings=tuple(r.warnings),
        pyproject=parsed.pyproject,
        metrics_port=metrics_port,
        deployment_strategy=strategy,
        team=team,
        reset_scale=bool(parsed.reset_scale),
        requirements=_tuple(v.get("requirements")),
        requirements_context_dir=parsed.requirements_context_dir,
        python_version=v.get("python_version"),
        app_files=_tuple(v.get("app_files")),
        app_files_ignore=_tuple(v["app_files_ignore"]) if v.get("app_files_ignore") is not None else None,
        app_files_context_dir=Path(files_context) if files_context else None,
    )
