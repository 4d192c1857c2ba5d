"""Real clients against the local CDN on a real gateway (no runners needed).

- ``fal_client`` 1.0.3 in-process, routed by ``falemu.testing.fal_client_routed_to`` (what the plugin's
  ``fal_client_emulated`` does): ``upload``, ``upload_file``, ``upload_image``, the multipart path
  (over the threshold) and the ``"fal"`` fallback repository (``initiate?storage_type=gcs`` + PUT);
- the fal SDK 1.83 as a runner uses it, in a subprocess with ``FAL_USE_LOCAL_UPLOADER=1`` and
  ``FAL_API_SOCKET`` at falemu's socket: ``File.from_bytes``/``from_path`` (also the streamed path of a
  file over the multipart threshold), ``Image.from_pil``, ``File.reserve``, ``save_stream``; then fal's
  own SSRF-guarded ``download_file`` of each URL, with the runner shim's ``FALEMU_PUBLIC_ADDRESSES``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from falemu.testing import fal_client_routed_to

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "unit"))
from cdn_support import CdnStack

fal_client = pytest.importorskip("fal_client")
RUNNER_FILES = Path(__file__).resolve().parents[2] / "falemu" / "runtime" / "runner_files"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CdnStack]:
    with CdnStack(tmp_path_factory.mktemp("cdn")) as s:
        yield s


def _fetch(url: str) -> httpx.Response:
    response = httpx.get(url)
    assert response.status_code == 200, (url, response.status_code)
    return response


def test_fal_client_uploads_in_process(stack: CdnStack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import Image

    emulator: Any = SimpleNamespace(base_url=stack.base, api_key=stack.key)
    picture = tmp_path / "picture.webp"
    picture.write_bytes(b"RIFF....WEBPVP8 fake")
    with fal_client_routed_to(emulator):
        blob_url = fal_client.upload(b"raw bytes", "application/x-custom", file_name="raw.dat")
        file_url = fal_client.upload_file(picture)
        image_url = fal_client.upload_image(Image.new("RGB", (4, 3), (255, 0, 0)), format="png")
        fallback_url = fal_client.upload(b"via gcs", "text/plain", repository="fal")
        monkeypatch.setattr(fal_client.client, "MULTIPART_THRESHOLD", 300_000)
        monkeypatch.setattr(fal_client.client, "MULTIPART_CHUNK_SIZE", 128 * 1024)
        big = os.urandom(1_000_000)
        big_path = tmp_path / "big.bin"
        big_path.write_bytes(big)
        multipart_url = fal_client.upload_file(big_path)
        multipart_bytes_url = fal_client.upload(big, "application/octet-stream", file_name="b.bin")
    for url in (blob_url, file_url, image_url, fallback_url, multipart_url):
        assert url.startswith(stack.cdn.files_base + "/_falemu/cdn/files/"), url
    blob = _fetch(blob_url)
    assert blob.content == b"raw bytes"
    assert blob.headers["content-type"] == "application/x-custom"
    assert blob_url.endswith(".dat")
    webp = _fetch(file_url)
    assert webp.content == picture.read_bytes()
    assert webp.headers["content-type"] == "image/webp"
    png = _fetch(image_url)
    assert png.content.startswith(b"\x89PNG")
    assert png.headers["content-type"] == "image/png"
    assert Image.open(__import__("io").BytesIO(png.content)).size == (4, 3)
    assert _fetch(fallback_url).content == b"via gcs"
    assert _fetch(multipart_url).content == big
    assert _fetch(multipart_bytes_url).content == big
    assert fal_client.client.REST_URL == "https://rest.fal.ai"  # undone on exit
    assert fal_client.client.CDN_URL == "https://v3.fal.media"


SDK_SCRIPT = textwrap.dedent(
    """
    import io, json, os, sys, tempfile
    from pathlib import Path

    import falemu_public_addresses  # the runner shim: FALEMU_PUBLIC_ADDRESSES counts as routable
    from fal.toolkit import File, Image
    from fal.toolkit.file.providers.local import LocalFileRepository
    from fal.toolkit.utils.download_utils import download_file
    from PIL import Image as PILImage

    work = Path(sys.argv[1])
    out = {}
    out["bytes"] = File.from_bytes(b"from bytes", content_type="text/plain", file_name="b.txt").url
    small = work / "small.json"
    small.write_text('{"ok": true}')
    out["path"] = File.from_path(small, content_type="application/json").url
    big = work / "big.bin"
    big.write_bytes(os.urandom(3_000_000))
    out["big"] = File.from_path(big, save_kwargs={"multipart_threshold": 1_000_000}).url
    out["image"] = Image.from_pil(PILImage.new("RGB", (5, 7), (0, 255, 0)), format="png").url
    pending = File.reserve(content_type="text/csv", file_name="later.csv")
    out["reserved_before"] = pending.url
    out["reserved"] = pending.complete(b"a,b\\n1,2\\n").url
    out["stream"] = LocalFileRepository().save_stream(iter([b"chunk1-", b"chunk2"]), "s.txt", "text/plain")
    downloads = {}
    for name, url in out.items():
        if name == "reserved_before":
            continue
        path = download_file(url, target_dir=work / "dl" / name)
        downloads[name] = path.read_bytes().hex()
    out["downloads"] = downloads
    out["big_hex"] = big.read_bytes().hex()
    print(json.dumps(out))
    """
)


def test_fal_sdk_uploads_through_the_socket_and_downloads_with_its_guard(stack: CdnStack, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FAL_", "HTTP", "HTTPS", "ALL_PROXY"))}
    env.update(stack.cdn.runner_env())
    env["FAL_KEY"] = "runner-id:runner-secret"  # fal needs some key to build its upload headers
    env["PYTHONPATH"] = os.pathsep.join([str(RUNNER_FILES), env.get("PYTHONPATH", "")])
    assert env["FALEMU_PUBLIC_ADDRESSES"] == "127.0.0.1"
    script = tmp_path / "sdk.py"
    script.write_text(SDK_SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path)], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    base = stack.cdn.files_base + "/_falemu/cdn/files/"
    for name in ("bytes", "path", "big", "image", "reserved", "stream"):
        assert out[name].startswith(base), (name, out[name])
    assert out["reserved"] == out["reserved_before"]
    downloads = {name: bytes.fromhex(value) for name, value in out["downloads"].items()}
    assert downloads["bytes"] == b"from bytes"
    assert json.loads(downloads["path"]) == {"ok": True}
    assert downloads["big"] == bytes.fromhex(out["big_hex"])
    assert downloads["image"].startswith(b"\x89PNG")
    assert downloads["reserved"] == b"a,b\n1,2\n"
    assert downloads["stream"] == b"chunk1-chunk2"
    assert _fetch(out["bytes"]).headers["content-type"] == "text/plain"
    assert _fetch(out["image"]).headers["content-type"] == "image/png"
    assert _fetch(out["reserved"]).headers["content-type"] == "text/csv"
