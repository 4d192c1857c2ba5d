"""Options shared by several commands."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def project_option(fn: F) -> F:
    """``--project DIR``: the project folder, instead of discovering it from the current directory."""
    return click.option(
        "--project",
        "project",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="Project folder (default: discovered from the current directory, as fal does).",
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
