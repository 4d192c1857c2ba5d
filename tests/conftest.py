"""Shared test fixtures.

Tests that need a Docker engine carry ``@pytest.mark.docker``. Without an engine they skip, unless
``FALEMU_REQUIRE_DOCKER=1`` (as in CI), where they fail: CI can never pass by skipping them.
The offline base image the example apps build from is named by ``FALEMU_TEST_BASE_IMAGE``
(default ``falemu-base:bookworm``, which ``.ci/run`` makes with debootstrap; on a laptop with
internet ``python:3.11-slim`` plus fastapi/uvicorn works too).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
TEST_APPS = Path(__file__).resolve().parent / "apps"

os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")


def base_image_name() -> str:
    return os.environ.get("FALEMU_TEST_BASE_IMAGE", "falemu-base:bookworm")


def _require_docker() -> bool:
    return os.environ.get("FALEMU_REQUIRE_DOCKER", "") not in ("", "0", "false")


_docker_state: dict[str, Any] = {}


def _docker_problem() -> str | None:
    """None when an engine answers and has the base image; otherwise why not."""
    if "problem" not in _docker_state:
        try:
            import docker

            client = docker.from_env(timeout=10)
            client.ping()
            try:
                client.images.get(base_image_name())
                _docker_state["problem"] = None
            except docker.errors.ImageNotFound:
                _docker_state["problem"] = (
                    f"base image {base_image_name()} is missing (build it as .ci/run does, "
                    "or set FALEMU_TEST_BASE_IMAGE)"
                )
            client.close()
        except Exception as exc:
            _docker_state["problem"] = f"no Docker engine answers ({type(exc).__name__}: {exc})"
    problem: str | None = _docker_state["problem"]
    return problem


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("docker") is None:
        return
    problem = _docker_problem()
    if problem is None:
        return
    if _require_docker():
        pytest.fail(f"FALEMU_REQUIRE_DOCKER=1 but {problem}", pytrace=False)
    pytest.skip(f"{problem}; start Docker to run this test")


@pytest.fixture(scope="session")
def base_image() -> str:
    return base_image_name()


@pytest.fixture(scope="session")
def docker_client() -> Iterator[Any]:
    import docker

    client = docker.from_env(timeout=120)
    yield client
    client.close()


@pytest.fixture
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Config and cache folders of falemu under tmp_path, so tests never touch the user's own."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("FALEMU_CONFIG_DIR", raising=False)
    return tmp_path
