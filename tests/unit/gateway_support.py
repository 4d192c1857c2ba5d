"""Helpers shared by the gateway's sync and queue tests (their fixtures are in this folder's conftest)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from falemu.config.model import AppConfig, AppShape, ScalingConfig


def wait_for(predicate: Callable[[], object], timeout: float = 15.0) -> None:
    """Poll until ``predicate()`` is true: the gateway finishes its bookkeeping (lease release, events)
    just after the caller has the last byte, on another thread (a guard against hangs, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.01)


def app_config(alias: str, auth: str | None = "public", **scaling: Any) -> AppConfig:
    return AppConfig(
        name=alias,
        alias=alias,
        shape=AppShape.DIRECT_SERVER,
        project_root=Path("."),
        auth=auth,
        scaling=ScalingConfig(**scaling),
    )
