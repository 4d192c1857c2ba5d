"""A flat view of a resolved app or of falemu's settings: each value with where it came from.

Used by ``falemu config show`` (text and ``--json``). Build secrets and literal registry passwords are
masked; a ``$NAME`` password reference is shown as written.
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from falemu.config.model import AppConfig, ImageConfig
from falemu.config.settings import Settings

MASK = "***"


@dataclass(frozen=True)
class Entry:
    key: str
    value: Any
    # apps: "pyproject", "class" (a fal.App class), "default" or "derived"; settings: "default", "pyproject",
    # "env" or "cli"
    source: str


def jsonable(value: Any) -> Any:
    """``value`` with paths, tuples, enums and mappings turned into JSON types."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if hasattr(value, "__dataclass_fields__"):
        return {f.name: jsonable(getattr(value, f.name)) for f in fields(value)}
    return value


def app_entries(app: AppConfig) -> list[Entry]:
    src = app.sources

    def of(key: str) -> str:
        return src.get(key, "default")

    entries = [
        Entry("shape", app.shape.value, "derived"),
        Entry("alias", app.alias, of("name")),
        Entry("ref", app.ref, of("ref")),
        Entry("python_entry_point", app.python_entry_point, of("python_entry_point")),
        Entry("auth", app.effective_auth, of("auth") if app.auth is not None else "default"),
        Entry("deployment_strategy", app.deployment_strategy or "rolling", of("deployment_strategy")),
        Entry("team", app.team, of("team")),
        Entry(
            "reset_scale",
            app.reset_scale,
            "pyproject" if "no_scale" in src or of("app_scale_settings") == "pyproject" else "default",
        ),
        Entry("exposed_port", app.exposed_port, of("exposed_port")),
        Entry("metrics_port", app.metrics_port, of("metrics_port")),
        Entry("machine_type", list(app.machine_types), of("machine_type")),
        Entry("num_gpus", app.num_gpus, of("num_gpus")),
    ]
    for f in fields(app.scaling):
        entries.append(Entry(f.name, getattr(app.scaling, f.name), of(f.name)))
    for key, value in (
        ("regions", app.regions),
        ("secrets", app.secrets),
        ("data_mounts", app.data_mounts),
        ("private_logs", app.private_logs),
        ("skip_retry_conditions", app.skip_retry_conditions),
        ("retry_config", app.retry_config),
        ("requirements", app.requirements),
        ("requirements_context_dir", app.requirements_context_dir),
        ("python_version", app.python_version),
        ("app_files", app.app_files),
        ("app_files_ignore", app.app_files_ignore),
        ("app_files_context_dir", app.app_files_context_dir),
        ("_scheduler", app.raw.get("_scheduler")),
        ("_scheduler_options", app.raw.get("_scheduler_options")),
    ):
        entries.append(Entry(key, value, of(key)))
    if app.fal_app is not None:
        entries.extend(_fal_app_entries(app))
    if app.image is not None:
        image = app.image
        registries = {
            host: {"username": auth.username, "password": auth.password if auth.password.startswith("$") else MASK}
            for host, auth in image.registries.items()
        }
        for key, value in (("dockerfile", image.dockerfile), ("image", image.image)):
            entries.append(Entry(f"image.{key}", value, of(f"image.{key}")))
        text = _dockerfile_text(image)
        entries.append(_build_args_entry("image.build_args", image.build_args, text, of("image.build_args")))
        for key, value in (
            ("secrets", {k: MASK for k in image.secrets}),
            ("registries", registries),
            ("entrypoint", image.entrypoint),
            ("cmd", image.cmd),
        ):
            entries.append(Entry(f"image.{key}", value, of(f"image.{key}")))
        entries.append(Entry("image.use_isolate", image.use_isolate, "derived"))
        entries.append(Entry("image.context_dir", image.context_dir, "derived"))
    if app.health_check is not None:
        for f in fields(app.health_check):
            key = f"health_check.{f.name}"
            source = of(key)
            if f.name == "method" and source == "default" and app.health_check.method is not None:
                source = "derived"
            entries.append(Entry(key, getattr(app.health_check, f.name), source))
    return entries


def _dockerfile_text(image: ImageConfig) -> str:
    if image.dockerfile is not None:
        with contextlib.suppress(OSError, UnicodeDecodeError):
            return image.dockerfile.read_text(encoding="utf-8")
    return ""


def _build_args_entry(key: str, build_args: Mapping[str, str], dockerfile: str, source: str) -> Entry:
    """The build args an image is built with: the app's, and the ``FALEMU_BUILD_ARG_<NAME>`` overrides of
    names the app or its Dockerfile use (named in the source)."""
    from falemu.runtime.context import effective_build_args

    args = effective_build_args(build_args, dockerfile)
    overridden = ", ".join(f"FALEMU_BUILD_ARG_{name}" for name in sorted(args) if build_args.get(name) != args[name])
    if overridden:
        source = f"{source}, env {overridden}" if build_args else f"env {overridden}"
    return Entry(key, args, source)


def _fal_app_entries(app: AppConfig) -> list[Entry]:
    """What fal's loader read from a fal.App besides the scale settings: class, image, requirements."""
    fal_app = app.fal_app
    assert fal_app is not None
    src = app.sources
    entries = [
        Entry("fal_app.class", f"{fal_app.file}::{fal_app.class_name}", src.get("ref", "derived")),
        Entry("fal_app.endpoints", list(fal_app.routes), "class"),
        Entry("fal_app.serve_requirements", list(fal_app.serve_requirements), "derived"),
        Entry("fal_app.python", fal_app.python, "derived"),
        Entry("fal_app.fal_version", fal_app.fal_version, "derived"),
    ]
    image = fal_app.image
    source = src.get("image", "default")
    if image is None:
        entries.append(Entry("fal_app.image", None, source))
        return entries
    dockerfile = None
    if image.dockerfile is not None:
        lines = image.dockerfile.strip().splitlines()
        dockerfile = lines[0] + (f" ... ({len(lines)} lines)" if len(lines) > 1 else "")
    registries = {
        url: {"username": auth.username, "password": auth.password if auth.password.startswith("$") else MASK}
        for url, auth in image.registries.items()
    }
    before: list[tuple[str, Any]] = [
        ("dockerfile", dockerfile),
        ("image", image.image),
        ("context_dir", image.context_dir),
    ]
    after: list[tuple[str, Any]] = [
        ("secrets", {k: MASK for k in image.secrets}),
        ("registries", registries),
        ("context_files", list(image.sources)),
    ]
    entries += [Entry(f"fal_app.image.{key}", value, source) for key, value in before]
    entries.append(_build_args_entry("fal_app.image.build_args", image.build_args, image.dockerfile or "", source))
    entries += [Entry(f"fal_app.image.{key}", value, source) for key, value in after]
    return entries


def app_report(app: AppConfig) -> dict[str, Any]:
    return {
        "app": app.name,
        "pyproject": jsonable(app.pyproject),
        "values": {e.key: {"value": jsonable(e.value), "source": e.source} for e in app_entries(app)},
        "warnings": list(app.warnings),
    }


def settings_entries(settings: Settings) -> list[Entry]:
    return [
        Entry(f.name, getattr(settings, f.name), settings.sources.get(f.name, "default"))
        for f in fields(settings)
        if f.name != "sources"
    ]


def settings_report(settings: Settings, pyproject: Path | None) -> dict[str, Any]:
    return {
        "pyproject": jsonable(pyproject),
        "values": {e.key: {"value": jsonable(e.value), "source": e.source} for e in settings_entries(settings)},
    }
