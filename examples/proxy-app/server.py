"""An existing image service that is not FastAPI: Python's standard library only.

It stands for the server you already have (a C++ binary, a TorchServe, a Node app...). It listens on
``--host``/``--port`` and renders a PNG for ``POST /render {"prompt", "width", "height", "seed"}``, a
variation of a PNG (same size, colours picked by its bytes) for ``POST /vary?seed=N`` with the PNG as
the body; ``GET /ready`` answers 200 once it serves. The fal.App in app.py starts it in ``setup()`` and calls it.

Run it alone: ``python server.py --port 7860``, then
``curl -s localhost:7860/render -d '{"prompt": "fox"}' > fox.png``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import struct
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def render(prompt: str, width: int, height: int, seed: int) -> bytes:
    """A deterministic PNG: a two-colour gradient picked by the prompt and the seed."""
    digest = hashlib.sha256(f"{seed}:{prompt}".encode()).digest()
    start, end = digest[0:3], digest[3:6]
    rows = []
    for y in range(height):
        t = y / max(1, height - 1)
        pixel = bytes(round(a + (b - a) * t) for a, b in zip(start, end, strict=True))
        rows.append(b"\x00" + pixel * width)  # filter type 0, then RGB pixels

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"".join(rows), 9))
        + chunk(b"IEND", b"")
    )


def png_size(png: bytes) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk; ValueError for anything else."""
    if not png.startswith(b"\x89PNG\r\n\x1a\n") or png[12:16] != b"IHDR":
        raise ValueError("not a PNG image")
    width, height = struct.unpack(">II", png[16:24])
    if not (0 < width <= 4096 and 0 < height <= 4096):
        raise ValueError(f"a {width}x{height} image is too large")
    return width, height


def vary(png: bytes, seed: int) -> bytes:
    """A variation of ``png``: an image of the same size whose colours come from its bytes and the seed."""
    width, height = png_size(png)
    return render(hashlib.sha256(png).hexdigest(), width, height, seed)


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path != "/ready":
            self.send_error(404)
            return
        self._send(200, b'{"ready": true}', "application/json")

    def do_POST(self) -> None:
        path, _, query = self.path.partition("?")
        if path == "/vary":
            try:
                seed = int(query.removeprefix("seed=") or 0) if query.startswith("seed=") or not query else 0
                png = vary(self.rfile.read(int(self.headers.get("Content-Length") or 0)), seed)
            except ValueError as exc:
                self._send(400, json.dumps({"error": str(exc)}).encode(), "application/json")
                return
            self._send(200, png, "image/png")
            return
        if path != "/render":
            self.send_error(404)
            return
        try:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
            png = render(
                str(body["prompt"]), int(body.get("width", 256)), int(body.get("height", 256)), int(body.get("seed", 0))
            )
        except (KeyError, ValueError, TypeError) as exc:
            self._send(400, json.dumps({"error": str(exc)}).encode(), "application/json")
            return
        self._send(200, png, "image/png")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # quiet: the App logs what matters


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7860)
    args = parser.parse_args()
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    print(f"image server listening on {args.host}:{args.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
