"""fal.App settings, read by fal's own loader, with where each value came from.

A ``ref = "app.py::Class"`` app (or ``falemu up app.py::Class``) is loaded as ``fal run`` and ``fal
deploy`` load it: ``fal.utils.load_function_from`` runs the file, finds the class, wraps it and merges
the pyproject's options with fal's precedence (a pyproject key replaces a value only while the class
left it at fal.App's default; environment keys from the class always win). That needs the real fal
SDK on this machine (``pip install 'falemu[fal]'``), and it runs in a separate interpreter
(:mod:`falemu.config._falapp_probe`), so an app that raises at import or imports something heavy
never takes falemu down, and ``import falemu`` never imports fal.

The result is an :class:`~falemu.config.model.AppConfig` of shape ``FAL_APP`` whose ``fal_app`` holds
what fal would ship: the class, the app's own requirements and the ones fal adds to serve it, the
container image, the OpenAPI document, and fal's options as fal holds them. Each setting's source
(``class``, ``pyproject``, ``default``, ``derived``) is in ``AppConfig.sources``.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from falemu.config import _falapp_cache
from falemu.config._resolve import ParsedApp, resolve_app
from falemu.config.model import AppConfig, AppShape, HealthCheckConfig, Project, RegistryAuth, Source
from falemu.errors import ConfigError

__all__ = [
    "FAL_EXTRA_HINT",
    "FalApp",
    "FalAppImage",
    "is_ref",
    "load_fal_app",
    "load_ref",
    "require_fal",
    "resolve",
    "split_ref",
]

FAL_EXTRA_HINT = "install the fal SDK next to falemu: pip install 'falemu[fal]'"
LOAD_TIMEOUT = 300.0
_PROBE = Path(__file__).with_name("_falapp_probe.py")


@dataclass(frozen=True)
class FalAppImage:
    """The App's container image as fal holds it (``ContainerImage``, or the pyproject's image table)."""

    dockerfile: str | None  # the Dockerfile text; None for a prebuilt image reference
    image: str | None  # a prebuilt image reference (pyproject `image = "repo:tag"`)
    context_dir: Path
    build_args: Mapping[str, str] = field(default_factory=dict)
    registries: Mapping[str, RegistryAuth] = field(default_factory=dict)
    secrets: Mapping[str, str] = field(default_factory=dict)
    ignore: tuple[str, ...] = ()  # gitignore-style patterns for the context
    sources: tuple[str, ...] = ()  # COPY/ADD sources: what fal sends as the build context
    entrypoint: tuple[str, ...] | None = None
    cmd: tuple[str, ...] | None = None


@dataclass(frozen=True)
class FalApp:
    """What fal's loader made of a fal.App class (see the module docstring)."""

    file: Path
    class_name: str
    requirements: tuple[Any, ...]  # the app's own; strings, or lists of strings (install layers)
    serve_requirements: tuple[str, ...]  # what fal adds to serve it (SERVE_REQUIREMENTS, realtime extras)
    image: FalAppImage | None
    kind: str  # fal's environment kind: container or virtualenv
    python: str  # the interpreter that loaded it, e.g. 3.11.7: fal requires the same minor in the image
    fal_version: str
    openapi: Mapping[str, Any] = field(default_factory=dict)
    routes: tuple[str, ...] = ()
    realtime: bool = False
    version: str = "unknown"
    options: Mapping[str, Any] = field(default_factory=dict)  # {"host", "environment", "gateway"} as JSON

    @property
    def python_minor(self) -> str:
        return ".".join(self.python.split(".")[:2])

    @property
    def ref(self) -> str:
        return f"{self.file}::{self.class_name}"


def is_ref(arg: str) -> bool:
    """True for ``path.py`` / ``path.py::Class`` (fal's ``is_app_name`` says no), False for an app name."""
    path, name = split_ref(arg)
    return name is not None or path.endswith(".py")


def split_ref(ref: str) -> tuple[str, str | None]:
    """``fal.cli.parser.RefAction.split_ref``: split on the first ``::`` found after index 1."""
    index = ref.find("::", 1)
    if index <= 0:
        return ref, None
    return ref[:index], ref[index + 2 :]


def require_fal() -> None:
    """ConfigError naming the extra when fal is not importable by this interpreter."""
    if importlib.util.find_spec("fal") is None:
        raise ConfigError(
            "fal.App apps need the fal SDK on this machine, and it is not installed",
            hint=FAL_EXTRA_HINT,
        )


def resolve(project: Project | None, name: str, *, cwd: Path | None = None) -> AppConfig:
    """App ``name`` of ``project``, or the ref ``name`` (``app.py::Class``), with fal.Apps loaded."""
    from falemu.config.project import get_app

    if is_ref(name):
        return load_ref(name, project, cwd=cwd)
    if project is None:
        raise ConfigError(f"App {name} not found: there is no pyproject.toml", hint="pass a ref: app.py::MyApp")
    app = get_app(project, name)
    return load_fal_app(app) if app.shape is AppShape.FAL_APP else app


def load_fal_app(app: AppConfig) -> AppConfig:
    """``app`` (a pyproject ``ref`` app) completed with what fal's loader reads from the class."""
    if app.fal_app is not None or app.ref is None:
        return app
    path, class_name = split_ref(app.ref)
    assert app.pyproject is not None
    result = _probe(Path(path), class_name, cwd=app.project_root, toml=app.pyproject, toml_app=app.name)
    return _config(result, base=app, name=app.name, project_root=app.project_root)


def load_ref(ref: str, project: Project | None = None, *, cwd: Path | None = None) -> AppConfig:
    """``fal run path.py::Class``: the class alone, no pyproject options; ``name`` stays the ref as given."""
    where = (cwd or Path.cwd()).absolute()
    path, class_name = split_ref(ref)
    file = Path(path) if Path(path).is_absolute() else where / path
    result = _probe(file, class_name, cwd=where)
    root = project.root if project is not None else where
    return _config(result, base=None, name=ref, project_root=root)


def _probe(
    file: Path, class_name: str | None, *, cwd: Path, toml: Path | None = None, toml_app: str | None = None
) -> dict[str, Any]:
    require_fal()
    shown = _shown(file, cwd)
    if not file.is_file():
        raise ConfigError(
            f"ref file {shown} does not exist",
            hint="a ref is path/to/app.py::ClassName, relative to the project folder (pyproject) "
            "or the current folder (command line)",
        )
    args: dict[str, Any] = {
        "file": str(file),
        "class": class_name,
        "toml": str(toml) if toml is not None else None,
        "app": toml_app,
    }
    env = dict(os.environ)
    env.pop("IS_ISOLATE_AGENT", None)
    env.setdefault("PYTHONUNBUFFERED", "1")
    probe = _PROBE.read_text(encoding="utf-8")
    entry = _falapp_cache.key(probe, args, file, cwd, env) if _falapp_cache.enabled() else None
    cached = _falapp_cache.get(entry) if entry is not None else None
    if cached is not None:
        return cached
    with tempfile.TemporaryDirectory(prefix="falemu-load-") as tmp:
        out = Path(tmp) / "app.json"
        args["out"] = str(out)
        try:
            done = subprocess.run(
                [sys.executable, "-c", probe, json.dumps(args)],
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=LOAD_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise ConfigError(
                f"loading {shown} took longer than {LOAD_TIMEOUT:g} s",
                hint="fal runs the app module on this machine before anything else; move slow work into setup()",
            ) from None
        if not out.is_file():
            tail = (done.stderr or done.stdout or "").strip().splitlines()[-1:] or ["(no output)"]
            raise ConfigError(
                f"loading {shown} ended the loader process (exit code {done.returncode})",
                hint=f"its last output: {tail[0]}",
            )
        result: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    if not result.get("ok"):
        raise _load_error(result, shown, class_name)
    if entry is not None:
        _falapp_cache.put(entry, result)
    return result


def _shown(file: Path, cwd: Path) -> str:
    try:
        return str(file.relative_to(cwd))
    except ValueError:
        return str(file)


_FAL_LOADER_ERRORS = ("FalServerlessError",)


def _load_error(result: dict[str, Any], shown: str, class_name: str | None) -> ConfigError:
    message = str(result.get("message") or "")
    if result.get("kind") == "not-an-app":
        return ConfigError(
            f"{message}: falemu serves fal.App classes", hint=f"point the ref at a fal.App subclass in {shown}"
        )
    error_type = str(result.get("error_type") or "Error")
    where = result.get("where") or {}
    location = f"{where.get('file')}, line {where.get('line')}: {(where.get('code') or '').strip()}" if where else ""
    if error_type in _FAL_LOADER_ERRORS and not result.get("in_app_file"):
        named = f"::{class_name}" if class_name else ""
        return ConfigError(
            f"{message} ({shown}{named})",
            hint=f"a ref names a fal.App class of the file: {shown}::ClassName",
        )
    if error_type in ("ModuleNotFoundError", "ImportError") and result.get("in_app_file"):
        return ConfigError(
            f"loading {shown} failed: {error_type}: {message}",
            hint="fal imports the app module on this machine before it builds anything, so its top-level "
            f"imports must be installed here too (or import them inside setup()); at {location}",
        )
    if not result.get("in_app_file"):
        return ConfigError(
            f"loading {shown} failed: {error_type}: {message}".rstrip(": "),
            hint="fal's loader (fal.utils.load_function_from) rejected the class while wrapping it",
        )
    return ConfigError(f"loading {shown} failed: {error_type}: {message}".rstrip(": "), hint=f"at {location}")


# -- the result as an AppConfig ------------------------------------------------------------------------

_HOST_TO_VALUES = (
    "min_concurrency",
    "max_concurrency",
    "max_multiplexing",
    "concurrency_buffer",
    "concurrency_buffer_perc",
    "scaling_delay",
    "request_timeout",
    "request_start_timeout",
    "startup_timeout",
    "keep_alive",
    "private_logs",
    "machine_type",
    "num_gpus",
    "regions",
    "metrics_port",
    "skip_retry_conditions",
    "retry_config",
    "termination_grace_period_seconds",
    "secrets",
    "data_mounts",
)
# falemu's name for a setting -> fal's (host keys keep their names)
_SOURCE_KEYS = {
    "name": "app_name",
    "auth": "app_auth",
    "health_check": "health_check_config",
    "image": "environment.image",
    "requirements": "environment.requirements",
    "exposed_port": "gateway.exposed_port",
}


def _config(result: dict[str, Any], *, base: AppConfig | None, name: str, project_root: Path) -> AppConfig:
    host: dict[str, Any] = result["host"]
    environment: dict[str, Any] = result["environment"]
    gateway: dict[str, Any] = result["gateway"]
    values: dict[str, Any] = {key: host.get(key) for key in _HOST_TO_VALUES}
    values["exposed_port"] = gateway.get("exposed_port") or 8080
    values["requirements"] = result["user_requirements"] or None
    values["name"] = result.get("app_name") or name
    values["auth"] = result.get("app_auth")
    file = Path(result["file"])
    pyproject = base.pyproject if base is not None else None
    resolved = resolve_app(
        ParsedApp(
            name=name,
            project_root=project_root,
            pyproject=pyproject or project_root / "pyproject.toml",
            raw=base.raw if base is not None else {},
            ref=f"{file}::{result['class_name']}",
            python_entry_point=None,
            image=None,
            health_check=_health_check(host.get("health_check_config")),
            values=values,
            requirements_context_dir=base.requirements_context_dir if base is not None else None,
            reset_scale=base.reset_scale if base is not None else False,
            no_scale_used=False,
        )
    )
    user = tuple(tuple(r) if isinstance(r, list) else r for r in result["user_requirements"])
    flat_user = {r for r in _flatten(result["user_requirements"])}
    serve = tuple(r for r in _flatten(environment.get("requirements") or []) if r not in flat_user)
    fal_app = FalApp(
        file=file,
        class_name=str(result["class_name"]),
        requirements=user,
        serve_requirements=serve,
        image=_image(environment.get("image")),
        kind=str(environment.get("kind") or "virtualenv"),
        python=str(result["python"]),
        fal_version=str(result["fal_version"]),
        openapi=result.get("openapi") or {},
        routes=tuple(result.get("routes") or ()),
        realtime=bool(result.get("realtime")),
        version=str(result.get("version") or "unknown"),
        options={"host": host, "environment": environment, "gateway": gateway},
    )
    warnings = list(resolved.warnings)
    if fal_app.image is not None and fal_app.kind != "container":
        warnings.append(
            "the image comes from the pyproject but the class has none: fal 1.83.0 sends it with environment kind "
            "virtualenv, and what fal's servers do with that is not documented; falemu builds the image"
        )
    config = dataclasses.replace(
        resolved,
        sources=_sources(result["sources"], resolved),
        warnings=tuple(warnings),
        fal_app=fal_app,
    )
    if base is not None:
        config = dataclasses.replace(
            config,
            deployment_strategy=base.deployment_strategy,
            team=base.team,
            python_version=base.python_version,
        )
    return config


def _flatten(requirements: Any) -> list[str]:
    flat: list[str] = []
    for item in requirements or []:
        flat.extend(item if isinstance(item, list) else [item])
    return [str(r) for r in flat]


def _sources(found: Mapping[str, str], config: AppConfig) -> dict[str, Source]:
    """Where each setting came from, under falemu's names (``config show`` prints them)."""
    allowed = {"class", "pyproject", "default", "derived"}

    def of(fal_key: str) -> Source:
        value = found.get(fal_key, "default")
        return value if value in allowed else "default"  # type: ignore[return-value]

    sources: dict[str, Source] = {key: of(key) for key in _HOST_TO_VALUES}
    for key, fal_key in _SOURCE_KEYS.items():
        sources[key] = of(fal_key)
    if config.metrics_port is not None and found.get("metrics_port") is None:
        sources["metrics_port"] = "default"
    sources["ref"] = "pyproject" if config.raw.get("ref") is not None else "derived"
    for key in config.raw:
        sources.setdefault(key, "pyproject")
    return sources


def _health_check(value: Any) -> HealthCheckConfig | None:
    if not isinstance(value, dict) or not value.get("path"):
        return None
    return HealthCheckConfig(
        path=str(value["path"]),
        start_period_seconds=value.get("start_period_seconds"),
        timeout_seconds=value.get("timeout_seconds"),
        failure_threshold=value.get("failure_threshold"),
        call_regularly=value.get("call_regularly"),
        method=str(value["method"]).upper() if value.get("method") else None,
    )


def _command(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, list):
        return tuple(str(v) for v in value)
    import shlex

    return tuple(shlex.split(str(value)))


def _image(value: Any) -> FalAppImage | None:
    if not isinstance(value, dict):
        return None
    registries = {
        str(url): RegistryAuth(username=str(auth.get("username", "")), password=str(auth.get("password", "")))
        for url, auth in (value.get("registries") or {}).items()
        if isinstance(auth, dict)
    }
    return FalAppImage(
        dockerfile=value.get("dockerfile_str"),
        image=value.get("image"),
        context_dir=Path(value.get("context_dir") or "."),
        build_args={str(k): str(v) for k, v in (value.get("build_args") or {}).items()},
        registries=registries,
        secrets={str(k): str(v) for k, v in (value.get("secrets") or {}).items()},
        ignore=tuple(str(p) for p in value.get("dockerignore") or ()),
        sources=tuple(str(s) for s in value.get("docker_files_list") or ()),
        entrypoint=_command(value.get("entrypoint")),
        cmd=_command(value.get("cmd")),
    )
