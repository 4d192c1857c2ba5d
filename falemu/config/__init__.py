"""fal-compatible pyproject parsing and falemu's own settings.

``load_project`` finds pyproject.toml exactly as fal 1.83.0 does and ``get_app`` / ``Project.app``
parse one ``[tool.fal.apps.<name>]`` table with fal's rules and fal's messages. Nothing here imports
fal, docker or pytest.
"""

from __future__ import annotations

from falemu.config.discovery import find_project_root, find_pyproject, project_folder
from falemu.config.model import (
    AppConfig,
    AppShape,
    HealthCheckConfig,
    ImageConfig,
    Project,
    RegistryAuth,
    ScalingConfig,
)
from falemu.config.parser import APP_KEYS, parse_app
from falemu.config.project import LazyApps, fal_table, get_app, load_project, project_settings
from falemu.config.settings import Settings, config_dir, load_settings

__all__ = [
    "APP_KEYS",
    "AppConfig",
    "AppShape",
    "HealthCheckConfig",
    "ImageConfig",
    "LazyApps",
    "Project",
    "RegistryAuth",
    "ScalingConfig",
    "Settings",
    "config_dir",
    "fal_table",
    "find_project_root",
    "find_pyproject",
    "get_app",
    "load_project",
    "load_settings",
    "parse_app",
    "project_folder",
    "project_settings",
]
