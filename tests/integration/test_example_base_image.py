"""The direct-server example on its default base image's shape: a Python image without FastAPI and uvicorn."""

from __future__ import annotations

import io
import secrets
from pathlib import Path
from typing import Any

import httpx
import pytest

from falemu.runtime.base import RunnerSpec

pytestmark = pytest.mark.docker

# python:3.11-slim's shape, offline: the base image without FastAPI and uvicorn, and a `pip` that puts
# them back (recording how it was called) where the real one would download them.
SLIM_LIKE = """
FROM {base}
RUN mkdir -p /opt/stash && cd /usr/lib/python3/dist-packages && mv fastapi uvicorn /opt/stash/ \\
 && printf '#!/bin/sh\\necho "pip $*" >> /opt/pip-calls\\ncp -r /opt/stash/* /usr/lib/python3/dist-packages/\\n' \\
    > /usr/local/bin/pip && chmod +x /usr/local/bin/pip
"""


def test_the_example_installs_fastapi_and_uvicorn_on_a_base_image_without_them(
    rt_apps: Any, docker_runtime: Any, base_image: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = docker_runtime.client
    tag = f"falemu-test/slim-like:{secrets.token_hex(4)}"
    client.images.build(fileobj=io.BytesIO(SLIM_LIKE.format(base=base_image).encode()), tag=tag, rm=True)
    try:
        monkeypatch.setenv("FALEMU_BUILD_ARG_BASE_IMAGE", tag)
        prepared = docker_runtime.prepare(rt_apps.example())
        spec = RunnerSpec(prepared=prepared, runner_id="s1", owner="local", data_dir=tmp_path, gpu="off")
        runner = docker_runtime.start(spec)
        try:
            answer = httpx.post(f"{runner.url}/greet", json={"name": "slim"}, timeout=10)
            assert answer.json()["message"] == "Hello, slim."
        finally:
            docker_runtime.stop(runner, grace=1)
        calls = client.containers.run(prepared.image, ["cat", "/opt/pip-calls"], remove=True).decode()
        assert calls.startswith("pip install ")
        assert "fastapi" in calls
        assert "uvicorn" in calls
        client.images.remove(prepared.image, force=True)
    finally:
        client.images.remove(tag, force=True)
