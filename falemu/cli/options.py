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
