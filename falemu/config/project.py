"""Loading a project: find pyproject.toml as fal does, read ``[tool.fal]`` and ``[tool.falemu]``."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from falemu.config._toml import load_toml
from falemu.config.discovery import find_project_root
from falemu.config.model import AppConfig, Project
from falemu.config.parser import parse_app
from falemu.config.settings import Settings, load_settings
from falemu.errors import ConfigError

__all__ = ["LazyApps", "fal_table", "get_app", "load_project", "project_settings"]

_NO_PYPROJECT_HINT = (
    "fal looks for a pyproject.toml with [tool.fal] from the current folder upward and stops at the "
    "first folder with .git; run from the project folder or pass --project DIR"
)


class LazyApps(Mapping[str, AppConfig]):
    """``[tool.fal.apps]``: names known up front, each app parsed (and cached) on first lookup.

    A broken app raises :class:`ConfigError` only when it is looked up. When ``[tool.fal.apps]`` is not
    a table, every lookup fails with the error fal shows for it, and no names are listed.
    """

    def __init__(self, project_root: Path, pyproject: Path, apps: Any) -> None:
        self._root = project_root
        self._pyproject = pyproject
        self._apps = apps
        self._parsed: dict[str, AppConfig | ConfigError] = {}

    def __getitem__(self, name: str) -> AppConfig:
        if isinstance(self._apps, dict) and name not in self._apps:
            raise KeyError(name)
        if name not in self._parsed:
            try:
                self._parsed[name] = parse_app(self._root, self._apps, name, pyproject=self._pyproject)
            except ConfigError as exc:
                self._parsed[name] = exc
        result = self._parsed[name]
        if isinstance(result, ConfigError):
            raise ConfigError(result.message, hint=result.hint)
        return result

    def __contains__(self, name: object) -> bool:
        if isinstance(self._apps, dict):
            return name in self._apps
        return isinstance(name, str) and bool(self._apps)

    def __iter__(self) -> Iterator[str]:
        return iter(self._apps) if isinstance(self._apps, dict) else iter(())

    def __len__(self) -> int:
        return len(self._apps) if isinstance(self._apps, dict) else 0

    def __repr__(self) -> str:
        return f"LazyApps({list(self)!r})"

    @property
    def raw(self) -> Any:
        """``[tool.fal.apps]`` as written."""
        return self._apps


def fal_table(document: Mapping[str, Any]) -> dict[str, Any]:
    """``parse_pyproject_toml``: ``[tool.fal]`` with its top-level keys normalised (``--`` dropped, ``-`` -> ``_``)."""
    tool: Any = document.get("tool", {})
    try:
        config: Any = tool.get("fal", {})
        return {k.replace("--", "").replace("-", "_"): v for k, v in config.items()}
    except AttributeError as exc:  # `tool = "x"` or `[tool] fal = 1`: fal fails with Python's message
        raise ConfigError(str(exc), hint="[tool.fal] must be a table") from None


def load_project(path: Path | str | None = None, *, discover_from: Path | str | None = None) -> Project:
    """Read the project as ``fal deploy <name>`` would.

    ``path`` may be a pyproject.toml file (used as it is) or a folder (the search starts there, as if fal
    ran in it). Without ``path`` the search starts at ``discover_from``, else the current folder.
    """
    if path is not None:
        given = Path(path)
        if not given.exists():
            raise ConfigError(f"No such project folder or file: {given}", hint="check the --project path")
        if given.is_file():
            pyproject: Path | None = given.resolve()
            root = given.resolve().parent
        else:
            root = find_project_root(given)
            pyproject = root / "pyproject.toml" if (root / "pyproject.toml").is_file() else None
    else:
        root = find_project_root(discover_from)
        pyproject = root / "pyproject.toml" if (root / "pyproject.toml").is_file() else None
    if pyproject is None:
        raise ConfigError("No pyproject.toml file found.", hint=_NO_PYPROJECT_HINT)
    document = load_toml(pyproject)
    fal = fal_table(document)
    tool: Any = document.get("tool", {})
    falemu: Any = tool.get("falemu", {}) if isinstance(tool, dict) else {}
    if not isinstance(falemu, dict):
        raise ConfigError(f"[tool.falemu] in {pyproject} must be a table", hint="write [tool.falemu] with key = value")
    return Project(
        root=root,
        pyproject=pyproject,
        apps=LazyApps(root, pyproject, fal.get("apps", {})),
        falemu=falemu,
    )


def get_app(project: Project, name: str) -> AppConfig:
    """App ``name`` of ``project``; ConfigError with fal's message when it is missing or invalid."""
    apps = project.apps
    if isinstance(apps, LazyApps) and not isinstance(apps.raw, dict):
        return parse_app(project.root, apps.raw, name, pyproject=project.pyproject)
    return project.app(name)


def project_settings(
    project: Project | None,
    *,
    environ: Mapping[str, str] | None = None,
    cli: Mapping[str, Any] | None = None,
) -> Settings:
    """falemu's settings: defaults < ``[tool.falemu]`` of ``project`` < ``FALEMU_*`` < CLI flags."""
    return load_settings(project.falemu if project is not None else None, environ=environ, cli=cli)
