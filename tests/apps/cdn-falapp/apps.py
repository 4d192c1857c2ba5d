"""A fal.App whose outputs are files (fal's toolkit uploads them) and which downloads image URLs given
as input with fal's own helpers, for the local CDN's tests."""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

import fal
from fal.toolkit import File, Image
from fastapi import Request
from pydantic import BaseModel

REQUIREMENTS = ["pillow", "websockets", "msgpack"]  # as tests/apps/falapp: the same fal layer


class PaintInput(BaseModel):
    width: int = 8
    height: int = 5


class PaintOutput(BaseModel):
    image: Image
    from_pil: Image
    notes: File
    sha256: str


class MeasureInput(BaseModel):
    url: str


class MeasureOutput(BaseModel):
    size: list[int]
    sha256: str


class Painter(fal.App):
    requirements = REQUIREMENTS

    @fal.endpoint("/paint")
    def paint(self, payload: PaintInput, request: Request) -> PaintOutput:
        from PIL import Image as PILImage

        picture = PILImage.new("RGB", (payload.width, payload.height), (200, 30, 90))
        path = Path(tempfile.mkdtemp()) / "painted.png"
        picture.save(path)
        return PaintOutput(
            image=Image.from_path(path, content_type="image/png", request=request),
            from_pil=Image.from_pil(picture, format="png"),
            notes=File.from_bytes(b"painted by a runner", content_type="text/plain", file_name="notes.txt"),
            sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
        )

    @fal.endpoint("/measure")
    def measure(self, payload: MeasureInput) -> MeasureOutput:
        from fal.toolkit.utils.download_utils import download_file

        downloaded = download_file(payload.url, tempfile.mkdtemp(), force=True)  # fal's SSRF-guarded download
        size = Image(url=payload.url).to_pil().size
        return MeasureOutput(size=list(size), sha256=hashlib.sha256(downloaded.read_bytes()).hexdigest())
