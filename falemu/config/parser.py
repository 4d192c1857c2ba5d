"""``[tool.fal.apps.<name>]`` as ``fal deploy <name>`` reads it (``get_app_data_from_toml`` of fal 1.83.0).

:func:`parse_app` runs fal's checks in fal's order, so a table with several mistakes fails with the
message fal would print first, word for word (``ConfigError.message``; falemu's own advice goes in
``ConfigError.hint``). What fal accepts is accepted, then resolved into an :class:`AppConfig` with the
defaults fal and its servers apply; values fal only rejects or ignores later become
``AppConfig.warnings``.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path
from typing import Any

from falemu.config._hints import unexpected_keys_hint
from falemu.config._image import ParsedImage, parse_image
from falemu.config._keys import APP_KEYS, HEALTH_CHECK_KEYS
from falemu.config._resolve import ParsedApp, resolve_app
from falemu.config._validators import (
    validate_bool,
    validate_int,
    validate_port,
    validate_regions,
    validate_requirements,
    validate_retry_config,
    validate_skip_retry_conditions,
    validate_str_list,
)
from falemu.config.model import AppConfig, HealthCheckConfig
from falemu.errors import ConfigError

__all__ = ["APP_KEYS", "HEALTH_CHECK_KEYS", "parse_app"]

_POPPED = APP_KEYS[3:-2]  # popped before fal validates any of them


def _lookup(apps: Any, name: str) -> Any:
    try:
        return apps[name]
    except KeyError:
        names = ", ".join(map(str, apps)) if isinstance(apps, dict) and apps else "none"
        raise ConfigError(
            f"App {name} not found in pyproject.toml",
            hint=f"apps declared under [tool.fal.apps]: {names}",
        ) from None
    except (TypeError, IndexError) as exc:  # `apps = [...]` or `apps = "x"`: fal fails with Python's message
        raise ConfigError(str(exc), hint="[tool.fal.apps] must be a table of app tables") from None


def _app_table(name: str, table: Any) -> dict[str, Any]:
    if isinstance(table, dict):
        return table
    try:  # fal's first operation on the table; reproduces Python's message for a non-table
        table.pop("image", None)
    except (AttributeError, TypeError) as exc:
        raise ConfigError(str(exc), hint=f"[tool.fal.apps.{name}] must be a table") from None
    raise ConfigError(f"App {name} must be a table in pyproject.toml", hint=f"[tool.fal.apps.{name}] must be a table")


def parse_app(project_root: Path, apps: Any, name: str, *, pyproject: Path | None = None) -> AppConfig:
    """Parse app ``name`` of the ``[tool.fal.apps]`` table ``apps`` found in ``project_root``."""
    toml_path = pyproject if pyproject is not None else project_root / "pyproject.toml"
    raw = copy.deepcopy(_lookup(apps, name))
    app_data = copy.deepcopy(_app_table(name, raw))

    image_config = app_data.pop("image", None)
    python_entry_point = app_data.pop("python_entry_point", None)
    if python_entry_point is not None:
        if not isinstance(python_entry_point, str):
            raise ConfigError(
                f"App {name} python_entry_point must be a string in pyproject.toml",
                hint='for example python_entry_point = "my_pkg.app:MyApp"',
            )
        ref = app_data.pop("ref", None)
        if ref is not None:
            raise ConfigError(
                f"App {name} cannot have both ref and python_entry_point keys in pyproject.toml",
                hint="keep ref for a file (path.py::Class) or python_entry_point for a package (module:Class)",
            )
    else:
        ref = app_data.pop("ref", None)
        if ref is None:
            if image_config is None:
                raise ConfigError(
                    f"App {name} does not have a ref key in pyproject.toml",
                    hint='add ref = "app.py::MyApp", python_entry_point = "pkg.mod:MyApp", '
                    "or an image table for a direct server",
                )
        elif not isinstance(ref, str):
            raise ConfigError(
                f"App {name} ref must be a string in pyproject.toml", hint='for example ref = "app.py::MyApp"'
            )
        else:
            ref = str(project_root / ref)

    values: dict[str, Any] = {key: app_data.pop(key, None) for key in _POPPED}
    if values["requirements"] is not None:
        validate_requirements(values["requirements"])
    context_dir = values["requirements_context_dir"]
    if context_dir is not None and not isinstance(context_dir, str):
        raise ConfigError(
            "requirements_context_dir must be a string.", hint='for example requirements_context_dir = "."'
        )
    if values["python_version"] is not None and not isinstance(values["python_version"], str):
        raise ConfigError(
            f"App {name} python_version must be a string in pyproject.toml", hint='quote it: python_version = "3.11"'
        )
    _validate_host_keys(values, has_image=image_config is not None, toml_dir=toml_path.parent)

    health_check: HealthCheckConfig | None = None
    if values["health_check"] is not None:
        health_check = _health_check(name, values["health_check"])

    image: ParsedImage | None = None
    if image_config is not None:
        use_isolate = False if ref is None and python_entry_point is None else None
        image = parse_image(name, image_config, toml_path.parent, use_isolate=use_isolate)
        if use_isolate is False and health_check is not None and not health_check.method:
            health_check = replace(health_check, method="GET")

    requirements_context_dir: Path | None = None
    if values["requirements"] is not None or context_dir is not None:
        pyproject_dir = toml_path.parent.resolve()
        requirements_context_dir = pyproject_dir
        if context_dir is not None:
            context_path = Path(context_dir).expanduser()
            requirements_context_dir = (
                context_path.resolve() if context_path.is_absolute() else (pyproject_dir / context_path).resolve()
            )

    no_scale_used = "no_scale" in app_data
    if no_scale_used:
        reset_scale: Any = not app_data.pop("no_scale")
    else:
        reset_scale = app_data.pop("app_scale_settings", False)

    if app_data:
        hint = unexpected_keys_hint(app_data, APP_KEYS, where="app")
        if no_scale_used and "app_scale_settings" in app_data:
            hint = "fal reads app_scale_settings only without no_scale; remove the deprecated no_scale"
        raise ConfigError(f"Found unexpected keys in pyproject.toml: {app_data}", hint=hint)

    return resolve_app(
        ParsedApp(
            name=name,
            project_root=project_root,
            pyproject=toml_path,
            raw=raw,
            ref=ref,
            python_entry_point=python_entry_point,
            image=image,
            health_check=health_check,
            values=values,
            requirements_context_dir=requirements_context_dir,
            reset_scale=reset_scale,
            no_scale_used=no_scale_used,
        )
    )


def _validate_host_keys(values: dict[str, Any], *, has_image: bool, toml_dir: Path) -> None:
    """fal's checks of the host keys, in fal's order. Rewrites ``app_files_context_dir`` to absolute."""
    if values["regions"] is not None:
        validate_regions(values["regions"])
    app_files = values["app_files"]
    if app_files is not None:
        validate_str_list("app_files", app_files)
    if values["app_files_ignore"] is not None:
        validate_str_list("app_files_ignore", values["app_files_ignore"])
    files_context = values["app_files_context_dir"]
    if files_context is not None and not isinstance(files_context, str):
        raise ConfigError("app_files_context_dir must be a string.", hint='for example app_files_context_dir = "."')
    if files_context is not None and app_files is None:
        raise ConfigError(
            "app_files_context_dir is only supported when app_files is provided.",
            hint="add app_files, or remove app_files_context_dir",
        )
    if files_context and not Path(files_context).is_absolute():
        values["app_files_context_dir"] = str(toml_dir / files_context)
    if values["exposed_port"] is not None:
        validate_port("exposed_port", values["exposed_port"])
    if values["metrics_port"] is not None:
        validate_port("metrics_port", values["metrics_port"])
    if has_image and app_files:
        raise ConfigError(
            "app_files is not supported for container apps.",
            hint="COPY the files in the Dockerfile instead, or remove the image table",
        )
    if values["keep_alive"] is not None:
        validate_int("keep_alive", values["keep_alive"])
    if values["private_logs"] is not None:
        validate_bool("private_logs", values["private_logs"])
    scheduler = values["_scheduler"]
    if scheduler is not None and not (isinstance(scheduler, str) and scheduler):
        raise ConfigError("_scheduler must be a non-empty string.", hint="remove _scheduler to use fal's default")
    if values["_scheduler_options"] is not None and not isinstance(values["_scheduler_options"], dict):
        raise ConfigError(
            "_scheduler_options must be a table in pyproject.toml.",
            hint="remove _scheduler_options to use fal's default",
        )
    if values["skip_retry_conditions"] is not None:
        validate_skip_retry_conditions(values["skip_retry_conditions"])
    if values["retry_config"] is not None:
        values["retry_config"] = validate_retry_config(values["retry_config"])
    if values["termination_grace_period_seconds"] is not None:
        validate_int("termination_grace_period_seconds", values["termination_grace_period_seconds"])
    if values["secrets"] is not None:
        validate_str_list("secrets", values["secrets"])
    if values["data_mounts"] is not None:
        validate_str_list("data_mounts", values["data_mounts"])


def _health_check(name: str, health_check: Any) -> HealthCheckConfig:
    """``_build_health_check_config_from_toml``."""
    example = f'[tool.fal.apps.{name}.health_check] with path = "/health"'
    if not isinstance(health_check, dict):
        raise ConfigError(f"App {name} health_check must be a table in pyproject.toml", hint=f"write {example}")
    data = dict(health_check)
    path = data.pop("path", None)
    if path is None:
        raise ConfigError(f"App {name} health_check must specify 'path' in pyproject.toml", hint=f"write {example}")
    if not isinstance(path, str):
        raise ConfigError(f"App {name} health_check.path must be a string in pyproject.toml", hint=f"write {example}")
    fields = {key: data.pop(key, None) for key in HEALTH_CHECK_KEYS[1:]}
    for key in ("start_period_seconds", "timeout_seconds", "failure_threshold"):
        if fields[key] is not None:
            validate_int(f"health_check.{key}", fields[key])
    if fields["call_regularly"] is not None:
        validate_bool("health_check.call_regularly", fields["call_regularly"])
    if data:
        raise ConfigError(
            f"Found unexpected keys in app {name} health_check: {data}",
            hint=unexpected_keys_hint(data, HEALTH_CHECK_KEYS, where="health_check"),
        )
    # method is not checked by fal (it upper-cases a string on the wire); a non-string is a warning.
    return HealthCheckConfig(path=path, **fields)
