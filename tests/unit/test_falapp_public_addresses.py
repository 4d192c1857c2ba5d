"""The runner-side shim that lets fal's download helpers reach addresses falemu names.

Runs the real fal 1.83.0 of the host in a subprocess whose site folder holds the shim (as the runner
image's site-packages does), against an HTTP server on this machine's loopback addresses.
"""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import falemu

RUNNER_FILES = Path(falemu.__file__).parent / "runtime" / "runner_files"
BODY = b"\x89PNG\r\n\x1a\n" + b"x" * 100

SCRIPT = """
import json, site, sys, tempfile
site.addsitedir(sys.argv[1])
from fal.toolkit.utils.download_utils import download_file
from fal.toolkit.utils import ssrf
out = {}
for url in sys.argv[2:]:
    try:
        path = download_file(url, tempfile.mkdtemp(), force=True)
        out[url] = path.read_bytes().hex()
    except Exception as exc:
        out[url] = "refused: " + type(exc).__name__ + ": " + str(exc)
out["allowed"] = list(getattr(ssrf.is_globally_routable_ip, "falemu_allowed", ()))
print(json.dumps(out))
"""


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("0.0.0.0", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()


def _download(port: int, env_value: str | None, *hosts: str) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if k != "FALEMU_PUBLIC_ADDRESSES"}
    if env_value is not None:
        env["FALEMU_PUBLIC_ADDRESSES"] = env_value
    urls = [f"http://{host}:{port}/image.png" for host in hosts]
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(RUNNER_FILES), *urls],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=True,
    )
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_named_private_address_downloads_and_others_are_still_refused(port: int) -> None:
    result = _download(port, "127.0.0.1, not-an-ip", "127.0.0.1", "127.0.0.2")
    assert result[f"http://127.0.0.1:{port}/image.png"] == BODY.hex()
    refused = str(result[f"http://127.0.0.2:{port}/image.png"])
    assert refused.startswith("refused:")
    assert "non-routable" in refused
    assert result["allowed"] == ["127.0.0.1/32"]


def test_networks_are_accepted_and_without_the_variable_fal_refuses_all(port: int) -> None:
    result = _download(port, "127.0.0.0/30", "127.0.0.2")
    assert result[f"http://127.0.0.2:{port}/image.png"] == BODY.hex()
    untouched = _download(port, None, "127.0.0.1")
    assert str(untouched[f"http://127.0.0.1:{port}/image.png"]).startswith("refused:")
    assert untouched["allowed"] == []  # fal's own function, unwrapped
