"""fal.App outputs through the local CDN: the real fal 1.83 in a runner on the real engine.

``tests/apps/cdn-falapp`` returns ``Image.from_path(..., request=request)``, ``Image.from_pil`` and
``File.from_bytes`` outputs (fal's toolkit uploads them through the uploader socket falemu mounts), and
downloads image URLs with fal's SSRF-guarded ``download_file`` and ``Image.to_pil`` (which accept
falemu's file address through ``FALEMU_PUBLIC_ADDRESSES``). Checked: each output URL returns the exact
bytes the runner saved, with its content type; the runner downloads its own output and a caller's
upload.
"""

from __future__ import annotations

import hashlib
import io
import os
import secrets
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from docker_support import remove_app_images
from up_process import UpProcess

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "tests" / "apps" / "cdn-falapp"


@pytest.mark.timeout(900)
def test_image_outputs_return_the_exact_bytes_saved_and_runners_download_file_urls(
    tmp_path: Path, base_image: str, docker_client: Any
) -> None:
    from PIL import Image

    alias = f"painter-{secrets.token_hex(4)}"
    project = tmp_path / "project"
    shutil.copytree(APP, project)
    pyproject = project / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace("[tool.fal.apps.painter]", f"[tool.fal.apps.{alias}]"))
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("FALEMU_", "FAL_"))},
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "pytest_plugin")]),
        "FALEMU_PYTHON_IMAGE": base_image,  # the App has no image of its own: it runs on this Python image
        "FALEMU_CONFIG_DIR": str(tmp_path / "config"),
        "FALEMU_DATA_DIR": str(tmp_path / "data"),
        "FALEMU_FILES_DIR": str(tmp_path / "files"),
        "XDG_RUNTIME_DIR": str(tmp_path / "run"),
        "PYTHONUNBUFFERED": "1",
    }
    command = [sys.executable, "-m", "falemu", "up", "--project", str(project), "--port", "0", "--json"]
    proc = subprocess.Popen(
        [*command, "--runtime", "docker", "--gpu", "off"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    up = UpProcess(proc)
    try:
        ready = up.wait_for("Ready", timeout=840)
        app = f"{ready['url']}/local/{alias}"
        with httpx.Client(timeout=120) as client:
            painted = client.post(f"{app}/paint", json={"width": 8, "height": 5})
            assert painted.status_code == 200, painted.text
            out = painted.json()
            image = out["image"]
            assert image["url"].startswith(ready["files_url"])
            got = client.get(image["url"])
            assert hashlib.sha256(got.content).hexdigest() == out["sha256"]  # the exact bytes saved
            assert got.headers["content-type"] == "image/png"
            assert image["content_type"] == "image/png"
            pil = client.get(out["from_pil"]["url"])
            assert Image.open(io.BytesIO(pil.content)).size == (8, 5)
            assert pil.headers["content-type"] == "image/png"
            notes = client.get(out["notes"]["url"])
            assert notes.content == b"painted by a runner"
            assert notes.headers["content-type"] == "text/plain"

            own = client.post(f"{app}/measure", json={"url": image["url"]})
            assert own.status_code == 200, own.text
            assert own.json() == {"size": [8, 5], "sha256": out["sha256"]}

            picture = io.BytesIO()
            Image.new("RGB", (13, 7), (0, 0, 0)).save(picture, format="png")
            key = (tmp_path / "config" / "default-key").read_text().strip()
            target = client.post(
                f"{ready['url']}/_falemu/rest/storage/upload/initiate?storage_type=fal-cdn-v3",
                json={"file_name": "input.png", "content_type": "image/png"},
                headers={"Authorization": f"Key {key}"},
            ).json()
            assert client.put(target["upload_url"], content=picture.getvalue()).status_code == 200
            caller = client.post(f"{app}/measure", json={"url": target["file_url"]})
            assert caller.status_code == 200, caller.text
            assert caller.json() == {"size": [13, 7], "sha256": hashlib.sha256(picture.getvalue()).hexdigest()}
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
        remove_app_images(docker_client, alias)
