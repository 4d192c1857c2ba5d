"""The local CDN with real ``falemu up`` processes and runners in containers on the real engine.

One app (``tests/apps/cdn-files``) saves files through the uploader socket falemu mounts into it, and
downloads URLs with urllib. Checked: the runner's environment and mount; the URL a runner gets is on an
address the host reaches too (the engine's bridge), serving the exact bytes, content type and ranges; a
caller's upload (``initiate`` + ``PUT``, the flow of fal's SDK and the JS client) is downloaded inside a
container; an unknown id is 404; a 300 MiB upload and its download stream through ``falemu up`` without
its memory growing by the file's size; and after that ``falemu up`` stops, the next one serves the same
files. Then the real ``fal_client``, in a shell that only evaluated ``falemu env``, uploads (its hosts
``rest.fal.ai`` and ``v3.fal.media`` reached through falemu's proxy) and runs the app with the URL.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from docker_support import remove_app_images
from up_process import UpProcess, user_env

pytestmark = pytest.mark.docker

APP = Path(__file__).resolve().parents[1] / "apps" / "cdn-files"
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)


class Up(UpProcess):
    def __init__(self, env: dict[str, str], project: Path) -> None:
        command = [sys.executable, "-m", "falemu", "up", "--project", str(project), "--port", "0", "--json"]
        proc = subprocess.Popen(
            [*command, "--runtime", "docker", "--gpu", "off"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        super().__init__(proc)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)


@pytest.fixture
def project(tmp_path: Path, docker_client: Any) -> Iterator[tuple[Path, str]]:
    alias = f"files-{secrets.token_hex(4)}"
    folder = tmp_path / "project"
    shutil.copytree(APP, folder)
    pyproject = folder / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace("[tool.fal.apps.files", f"[tool.fal.apps.{alias}"))
    yield folder, alias
    remove_app_images(docker_client, alias)


@pytest.fixture
def env(tmp_path: Path, base_image: str) -> dict[str, str]:
    return user_env(tmp_path, base_image, drop=("FALEMU_",))


def test_runner_and_caller_files_cross_the_local_cdn_and_outlive_the_run(
    project: tuple[Path, str], env: dict[str, str], tmp_path: Path
) -> None:
    folder, _ = project
    first = Up(env, folder)
    try:
        serving = first.wait_for("Serving")
        url = serving["url"]
        with httpx.Client(timeout=60) as client:
            saved = client.post(
                f"{url}/save",
                json={"data": base64.b64encode(PNG).decode(), "file_name": "out.png", "content_type": "image/png"},
            ).json()
            assert saved["status"] == 202
            assert saved["answer"]["state"] == "accepted_local"
            assert saved["env"]["FAL_USE_LOCAL_UPLOADER"] == "1"
            assert saved["env"]["FAL_API_SOCKET"] == "/run/fal/api.sock"
            file_url = saved["answer"]["file_url"]
            host = urlsplit(file_url).hostname
            assert host not in ("127.0.0.1", "localhost")  # containers cannot reach the host's loopback
            assert saved["env"]["FALEMU_PUBLIC_ADDRESSES"] == host
            assert urlsplit(file_url).path.startswith("/_falemu/cdn/files/")
            assert file_url.endswith(".png")

            got = client.get(file_url)  # from the host, on the same URL
            assert got.content == PNG
            assert got.headers["content-type"] == "image/png"
            part = client.get(file_url, headers={"Range": "bytes=1-3"})
            assert part.status_code == 206
            assert part.content == PNG[1:4]

            # A caller's upload (initiate + PUT, as fal's SDK and @fal-ai/client do), read inside a container.
            key = (tmp_path / "config" / "falemu" / "default-key").read_text().strip()
            gateway = f"{urlsplit(url).scheme}://{urlsplit(url).netloc}"
            target = client.post(
                f"{gateway}/_falemu/rest/storage/upload/initiate?storage_type=fal-cdn-v3",
                json={"file_name": "input.jpg", "content_type": "image/jpeg"},
                headers={"Authorization": f"Key {key}"},
            ).json()
            payload = os.urandom(300_000)
            assert client.put(target["upload_url"], content=payload).status_code == 200
            fetched = client.post(f"{url}/fetch", json={"url": target["file_url"]}).json()
            assert base64.b64decode(fetched["data"]) == payload
            assert fetched["content_type"] == "image/jpeg"

            missing = client.get(file_url.rsplit("/", 1)[0] + "/AAAAAAAAAAAAAAAAAAAAAA.png")
            assert missing.status_code == 404

            # A huge upload streams to disk: falemu up's peak memory does not grow by the file's size.
            before = _peak_rss(first.proc.pid)
            huge = client.post(
                f"{gateway}/_falemu/rest/storage/upload/initiate?storage_type=fal-cdn-v3",
                json={"file_name": "huge.bin", "content_type": "application/octet-stream"},
                headers={"Authorization": f"Key {key}"},
            ).json()
            sent = hashlib.sha256()
            assert client.put(huge["upload_url"], content=_chunks(HUGE, sent)).status_code == 200
            received = hashlib.sha256()
            size = 0
            with client.stream("GET", huge["file_url"]) as download:
                for chunk in download.iter_bytes():
                    received.update(chunk)
                    size += len(chunk)
            assert size == HUGE
            assert received.hexdigest() == sent.hexdigest()
            grown = _peak_rss(first.proc.pid) - before
            assert grown < 64 * 1024 * 1024, f"peak memory grew by {grown >> 20} MiB for a {HUGE >> 20} MiB file"
    finally:
        first.stop()
    assert first.proc.returncode == 0
    assert not _answers(file_url)  # the file listener stopped with its falemu up

    second = Up(env, folder)
    try:
        again = second.wait_for("Serving")
        base = f"{urlsplit(again['url']).scheme}://{urlsplit(again['url']).netloc}"
        with httpx.Client(timeout=60) as client:
            stored = client.get(f"{base}{urlsplit(file_url).path}")
            assert stored.content == PNG
            assert stored.headers["content-type"] == "image/png"
            caller_file = client.get(f"{base}{urlsplit(target['file_url']).path}")
            assert caller_file.content == payload
    finally:
        second.stop()


HUGE = 300 * 1024 * 1024


def _chunks(total: int, digest: Any) -> Iterator[bytes]:
    block = os.urandom(1024 * 1024)
    left = total
    while left > 0:
        part = block[: min(left, len(block))]
        digest.update(part)
        left -= len(part)
        yield part


def _peak_rss(pid: int) -> int:
    """The peak resident memory of a process (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM for process {pid}")


def _answers(url: str) -> bool:
    try:
        httpx.get(url, timeout=2)
    except httpx.HTTPError:
        return False
    return True


FAL_CLIENT_SCRIPT = textwrap.dedent(
    """
    import base64, io, json, os, sys
    import fal_client
    import httpx
    from PIL import Image

    work, app_id = sys.argv[1], sys.argv[2]
    data = os.urandom(2_000_000)
    path = os.path.join(work, "input.webp")
    with open(path, "wb") as fh:
        fh.write(data)
    url = fal_client.upload_file(path)
    fetched = fal_client.run(f"{app_id}/fetch", arguments={"url": url})
    image_url = fal_client.upload_image(Image.new("RGB", (3, 2), (0, 0, 255)), format="png")
    text_url = fal_client.upload(b"hello", "text/plain")
    fal_client.client.MULTIPART_THRESHOLD = 1_000_000  # the multipart path (above 100 MB), with less data
    fal_client.client.MULTIPART_CHUNK_SIZE = 400_000
    multipart_url = fal_client.upload(data, "application/octet-stream", file_name="parts.bin")
    image = httpx.get(image_url)
    print(json.dumps({
        "url": url,
        "same": base64.b64decode(fetched["data"]) == data,
        "content_type": fetched["content_type"],
        "image_size": Image.open(io.BytesIO(image.content)).size,
        "image_type": image.headers["content-type"],
        "text": httpx.get(text_url).text,
        "multipart_same": httpx.get(multipart_url).content == data,
        "urls": [image_url, text_url, multipart_url],
    }))
    """
)


def test_fal_client_from_a_shell_with_falemu_env_uploads_and_runs(
    project: tuple[Path, str], env: dict[str, str], tmp_path: Path
) -> None:
    folder, alias = project
    up = Up(env, folder)
    try:
        ready = up.wait_for("Ready")
        script = tmp_path / "client.py"
        script.write_text(FAL_CLIENT_SCRIPT)
        shell_env = {k: v for k, v in env.items() if not k.startswith(("FAL_", "HTTP", "HTTPS", "NO_PROXY"))}
        line = f'eval "$({sys.executable} -m falemu env)" && exec {sys.executable} {script} {tmp_path} local/{alias}'
        done = subprocess.run(["sh", "-c", line], env=shell_env, capture_output=True, text=True, timeout=240)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
        out = json.loads(done.stdout.strip().splitlines()[-1])
    finally:
        up.stop()
    assert out["url"].startswith(ready["files_url"])
    assert out["same"] is True  # the app downloaded the caller's upload inside its container
    assert out["content_type"] == "image/webp"
    assert out["image_size"] == [3, 2]
    assert out["image_type"] == "image/png"
    assert out["text"] == "hello"
    assert out["multipart_same"] is True
    assert all(url.startswith(ready["files_url"]) for url in out["urls"])
