"""The Emulator on the real engine when one of two apps cannot start: the start fails with falemu's
error naming the app, and nothing is left running, including the healthy app's warm runner."""

from __future__ import annotations

import dataclasses
import secrets
from pathlib import Path
from typing import Any

import pytest
from docker_support import remove_app_images

from falemu.config.model import AppConfig, AppShape, ImageConfig, ScalingConfig
from falemu.errors import FalemuError

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parents[2]


def test_a_failing_app_fails_the_start_and_leaves_nothing(
    tmp_path: Path, base_image: str, docker_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from falemu.config import get_app, load_project
    from falemu.config.model import Project
    from falemu.config.settings import Settings
    from falemu.emulator import Emulator

    monkeypatch.setenv("FALEMU_BUILD_ARG_BASE_IMAGE", base_image)
    monkeypatch.setenv("FALEMU_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    suffix = secrets.token_hex(4)
    example = load_project(ROOT / "examples" / "direct-server")
    good = dataclasses.replace(get_app(example, "greeter"), alias=f"fail-good-{suffix}")
    folder = ROOT / "tests" / "apps" / "exits-at-start"
    bad = AppConfig(
        name="crasher",
        alias=f"fail-bad-{suffix}",
        shape=AppShape.DIRECT_SERVER,
        project_root=folder,
        image=ImageConfig(dockerfile=folder / "Dockerfile", build_args={"BASE_IMAGE": "python:3.11-slim"}),
        exposed_port=8000,
        scaling=ScalingConfig(termination_grace_period_seconds=1),
    )
    project = Project(root=example.root, pyproject=example.pyproject, apps={"greeter": good, "crasher": bad})
    emulator = Emulator(project, Settings(port=0, data_dir=tmp_path / "data", runtime="docker"), warm=True)
    try:
        with pytest.raises(FalemuError) as info:
            emulator.start()
        assert bad.alias in info.value.message or "crasher" in info.value.message
        assert "exit" in info.value.message.lower() or "3" in info.value.message
        for alias in (good.alias, bad.alias):
            assert docker_client.containers.list(all=True, filters={"label": f"falemu.app={alias}"}) == [], alias
    finally:
        emulator.stop()
        remove_app_images(docker_client, good.alias, bad.alias)
