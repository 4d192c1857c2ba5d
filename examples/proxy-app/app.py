"""The proxy pattern: a fal.App in front of a server you already have.

``setup()`` starts the existing server (server.py, not FastAPI) on 127.0.0.1 inside the runner and
waits until it answers; ``/generate`` validates a typed input, calls the server, and returns its PNG as
a ``fal.toolkit.Image`` uploaded with ``Image.from_path(..., request=request)`` (on fal, to fal's CDN;
on falemu, to its local CDN). ``/vary`` takes an image by URL (fal's ``ImageField``: an upload field in
the Playground), downloads it with fal's guarded downloader and returns a variation of it the same way.
``teardown()`` stops the server when the runner is shut down.

    falemu up                 # from this folder: builds, starts a runner, serves local/proxy
    fal deploy proxy          # the same App on fal
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import fal
from fal.container import ContainerImage
from fal.exceptions import FieldException
from fal.toolkit import Image, ImageField
from fal.toolkit.utils.download_utils import download_file
from fastapi import Request
from pydantic import BaseModel, Field

SERVER_PORT = 7860

# The runner image: the existing server's files on a Python base. BASE_IMAGE is a build argument so
# an offline machine builds on a local image (FALEMU_BUILD_ARG_BASE_IMAGE=...).
DOCKERFILE = """
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}
WORKDIR /srv
COPY server.py /srv/server.py
"""


class GenerateInput(BaseModel):
    prompt: str = Field(min_length=1, max_length=500, description="What to draw.", examples=["a red fox at dawn"])
    width: int = Field(default=256, ge=16, le=1024, description="Width in pixels.")
    height: int = Field(default=256, ge=16, le=1024, description="Height in pixels.")
    seed: int | None = Field(default=None, ge=0, le=2**31 - 1, description="The same seed draws the same image.")


class VaryInput(BaseModel):
    image_url: str = ImageField(description="The PNG image to vary, by URL (in the Playground: a file you upload).")
    seed: int | None = Field(default=None, ge=0, le=2**31 - 1, description="The same seed gives the same variation.")


class GenerateOutput(BaseModel):
    image: Image = Field(description="The generated image (PNG).")
    seed: int = Field(description="The seed used.")


class ProxyApp(fal.App, keep_alive=300, max_concurrency=1):
    machine_type = "GPU-A100"
    image = ContainerImage.from_dockerfile_str(DOCKERFILE, context_dir=Path(__file__).resolve().parent)

    def setup(self) -> None:
        self.server = subprocess.Popen(
            [sys.executable, "/srv/server.py", "--host", "127.0.0.1", "--port", str(SERVER_PORT)]
        )
        deadline = time.monotonic() + 60
        while True:  # fal marks the runner ready when setup() returns: only once the server answers
            if self.server.poll() is not None:
                raise RuntimeError(f"the image server exited with code {self.server.returncode}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{SERVER_PORT}/ready", timeout=2):
                    break
            except (urllib.error.URLError, OSError):
                if time.monotonic() > deadline:
                    raise RuntimeError("the image server did not answer within 60 s") from None
                time.sleep(0.05)
        print(f"proxy: image server ready on 127.0.0.1:{SERVER_PORT}", flush=True)

    def teardown(self) -> None:
        self.server.terminate()
        self.server.wait(timeout=5)
        print("proxy: image server stopped", flush=True)

    @fal.endpoint("/generate")
    def generate(self, input: GenerateInput, request: Request) -> GenerateOutput:
        seed = input.seed if input.seed is not None else random.randint(0, 2**31 - 1)
        payload = {"prompt": input.prompt, "width": input.width, "height": input.height, "seed": seed}
        call = urllib.request.Request(
            f"http://127.0.0.1:{SERVER_PORT}/render",
            data=json.dumps(payload).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(call, timeout=60) as response:
            png = response.read()
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "image.png"
            path.write_bytes(png)
            image = Image.from_path(path, content_type="image/png", request=request)
        return GenerateOutput(image=image, seed=seed)

    @fal.endpoint("/vary")
    def vary(self, input: VaryInput, request: Request) -> GenerateOutput:
        seed = input.seed if input.seed is not None else random.randint(0, 2**31 - 1)
        with tempfile.TemporaryDirectory() as folder:
            try:
                source = download_file(input.image_url, folder)
            except Exception as exc:  # an unreachable, refused or missing URL is the caller's mistake
                raise FieldException("image_url", f"the image could not be downloaded: {exc}") from None
            call = urllib.request.Request(
                f"http://127.0.0.1:{SERVER_PORT}/vary?seed={seed}",
                data=Path(source).read_bytes(),
                headers={"Content-Type": "image/png"},
            )
            try:
                with urllib.request.urlopen(call, timeout=60) as response:
                    png = response.read()
            except urllib.error.HTTPError as exc:  # the server says why (not a PNG, too large)
                raise FieldException("image_url", json.loads(exc.read())["error"]) from None
            path = Path(folder) / "variation.png"
            path.write_bytes(png)
            image = Image.from_path(path, content_type="image/png", request=request)
        return GenerateOutput(image=image, seed=seed)
