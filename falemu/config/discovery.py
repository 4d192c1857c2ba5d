"""Where fal finds pyproject.toml: ``fal/project.py`` of fal 1.83.0, mirrored.

From the start folder upward, the first folder that has a ``.git`` entry (file or folder) is the
project root, even when it has no pyproject.toml; otherwise the first folder whose pyproject.toml has
a ``[tool.fal]`` table; otherwise the filesystem root. The pyproject is ``<root>/pyproject.toml`` when
that is a file. A pyproject.toml passed on the way up is parsed, so a syntax error in it stops the
search, as it does in fal.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from falemu.config._toml import load_toml
from falemu.errors import ConfigError

__all__ = ["find_project_root", "find_pyproject", "has_fal_table", "project_folder"]


def has_fal_table(document: dict[str, Any]) -> bool:
    """fal's test ``"fal" in pyproject.get("tool", {})``, with Python's ``in`` on whatever ``tool`` is."""
    tool: Any = document.get("tool", {})
    try:
        return "fal" in tool
    except TypeError as exc:  # `tool = 5`: fal stops with this same TypeError
        raise ConfigError(str(exc), hint="`tool` must be a table in pyproject.toml") from None


def find_project_root(start: Path | str | None = None) -> Path:
    """The folder fal treats as the project root when run from ``start`` (default: the current folder)."""
    path = Path.cwd().joinpath(start).resolve() if start is not None else Path.cwd().resolve()
    base = path if path.is_dir() else path.parent
    directory = base
    for directory in (base, *base.parents):
        if (directory / ".git").exists():
            return directory
        candidate = directory / "pyproject.toml"
        if candidate.is_file() and has_fal_table(load_toml(candidate)):
            return directory
    return directory


def find_pyproject(start: Path | str | None = None) -> Path | None:
    """``<root>/pyproject.toml`` of :func:`find_project_root`, or None when the root has none."""
    candidate = find_project_root(start) / "pyproject.toml"
    return candidate if candidate.is_file() else None


def project_folder(start: Path | str | None = None) -> Path:
    """The folder that stands for the project at ``start`` in falemu's own records (its queue store, the
    state of a running ``falemu up``, runner labels): fal's project root, or, where fal finds no project at
    all and falls back to the filesystem root, the start folder (default: the current folder) itself, so
    ``falemu up app.py::App`` in two folders without a project are two projects, not one called ``/``."""
    root = find_project_root(start)
    if root.parent != root or (root / ".git").exists() or (root / "pyproject.toml").is_file():
        return root
    path = Path.cwd().joinpath(start).resolve() if start is not None else Path.cwd().resolve()
    return path if path.is_dir() else path.parent
