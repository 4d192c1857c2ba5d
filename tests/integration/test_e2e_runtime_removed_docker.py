"""A runner removed by someone else while it starts (``falemu down`` in another terminal, ``docker rm``)
fails its start with falemu's own error, never with a raw Docker SDK exception (a traceback to the user).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from falemu.errors import FalemuError

pytestmark = pytest.mark.docker


def test_container_removed_during_start_is_a_falemu_error(
    prepared_example: Any, docker_runtime: Any, rt_apps: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from falemu.runtime.base import RunnerSpec

    engine = docker_runtime._api  # the engine calls of a runner's start (runtime.engine_api)
    real_start = engine.start

    def start_then_removed(container: str) -> None:
        real_start(container)
        docker_runtime.client.api.remove_container(container, force=True)  # what a concurrent `falemu down` does

    monkeypatch.setattr(engine, "start", start_then_removed)
    with pytest.raises(FalemuError) as info:
        docker_runtime.start(RunnerSpec(prepared_example, "gone", "local", tmp_path, gpu="off"))
    assert "removed" in info.value.message
    assert rt_apps.containers(docker_runtime.client, prepared_example.app.alias) == []
