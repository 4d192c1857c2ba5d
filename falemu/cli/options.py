"""Options shared by several commands."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from falemu.state import Instance

F = TypeVar("F", bound=Callable[..., Any])

NO_APPS_HINT = (
    "add a [tool.fal.apps.<name>] table to it, for example with exposed_port = 8000 and "
    '[tool.fal.apps.<name>.image] dockerfile = "Dockerfile"'
)


def project_option(fn: F) -> F:
    """``--project PATH``: the project folder (or its pyproject.toml), instead of discovering it."""
    return click.option(
        "--project",
        "project",
        type=click.Path(path_type=Path),
        default=None,
        help="Project folder or its pyproject.toml (default: found from the current folder upward, as fal does).",
    )(fn)


def runtime_option(fn: F) -> F:
    """``--runtime auto|docker|process``, the same wording wherever runners start."""
    return click.option(
        "--runtime",
        "runtime_name",
        type=click.Choice(["auto", "docker", "process"]),
        default=None,
        help="Where runners run: docker (containers), process (host processes, no Docker needed) or auto "
        "(Docker when it answers). Default: [tool.falemu] / FALEMU_RUNTIME / auto.",
    )(fn)


def gpu_option(fn: F) -> F:
    """``--gpu auto|require|off``."""
    return click.option(
        "--gpu",
        type=click.Choice(["auto", "require", "off"]),
        default=None,
        help="GPU passthrough for GPU machine types: auto (GPUs when the engine has them, else CPU with a "
        "warning), require (fail without GPUs) or off.",
    )(fn)


def examples(*lines: tuple[str, str]) -> str:
    """An ``Examples:`` epilog, kept as written by click's help formatter."""
    width = max(len(cmd) for cmd, _ in lines) + 2
    body = "\n".join(f"  {cmd.ljust(width)}{what}".rstrip() for cmd, what in lines)
    return f"\b\nExamples:\n{body}"


def project_root(project: Path | None) -> Path | None:
    """The root folder ``--project`` names (None when not given): the folder, or a pyproject's folder."""
    if project is None:
        return None
    from falemu.config import load_project

    return load_project(project).root


def running_instances(project: Path | None) -> list[Instance]:
    """The running ``falemu up``s a command run here means, oldest first: with ``--project``, that
    project's only; else those serving the project around the current folder (found as fal finds it)
    when any does, else every one (so another project's newer ``falemu up`` never wins here)."""
    from falemu import state
    from falemu.config import project_folder
    from falemu.errors import FalemuError

    if project is not None:
        return state.instances(project_root(project))
    running = state.instances()
    try:
        here = project_folder()
    except (OSError, ValueError, FalemuError):  # an unreadable pyproject on the way up: none to prefer
        return running
    mine = [i for i in running if Path(i.project).resolve() == here]
    return mine or running


def load_for(project: Path | None, names: tuple[str, ...] | list[str]) -> Any:
    """The project of ``--project`` (or found as fal finds it). Refs (``app.py::Class``) need no pyproject:
    without one, the project is the folder fal would treat as the root (where it finds none, the folder
    the command runs in: :func:`~falemu.config.project_folder`), with no apps of its own."""
    from falemu.config import load_project, project_folder
    from falemu.config.falapp import is_ref
    from falemu.config.model import Project
    from falemu.errors import ConfigError

    try:
        return load_project(project)
    except ConfigError as exc:
        if exc.message != "No pyproject.toml file found." or not names or not all(is_ref(n) for n in names):
            raise
    root = project_folder(project)
    return Project(root=root, pyproject=root / "pyproject.toml", apps={})
