"""The official ``@fal-ai/client`` 1.10.1 from npm, unmodified, against a real ``falemu up``.

Node runs ``tests/js/client.mjs`` (the package pinned by ``tests/js/package-lock.json``, installed once
per session with ``npm ci``) two ways: (a) fal's URLs rewritten to the gateway by ``requestMiddleware``,
with the key in the client; (b) ``proxyUrl`` at falemu's ``/api/fal/proxy`` (the ``@fal-ai/server-proxy``
protocol) with no key in the client. Each covers run, a validation error, subscribe with logs (polling
and status streaming), queue submit/status/result/cancel, stream (SSE), and storage.upload into the
local CDN, read back by Node and downloaded by the app. The app is private and the owner is ``myteam``:
the proxy must add the key of that owner's local user. The proxy's refusals and CORS are checked with
plain HTTP, and a page on ``localhost`` in Chromium (the client bundled with esbuild, as a web app's
bundler would) uses the proxy and the CDN across origins: run, subscribe with logs, stream, and
storage.upload, whose bytes the page reads back.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from docker_support import remove_app_images
from up_process import UpProcess, user_env

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parents[2]
JS = ROOT / "tests" / "js"
APP = ROOT / "tests" / "apps" / "js-client"
OWNER = "myteam"
CLIENT_VERSION = json.loads((JS / "package.json").read_text())["dependencies"]["@fal-ai/client"]


def _require(tool: str) -> str:
    found = shutil.which(tool)
    if found is None:
        message = f"{tool} is not installed (apt-get install nodejs npm)"
        if os.environ.get("FALEMU_REQUIRE_DOCKER", "") not in ("", "0", "false"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return found


@pytest.fixture(scope="session")
def node() -> str:
    """Node with ``tests/js/node_modules`` installed from the lockfile (kept between sessions)."""
    node = _require("node")
    installed = JS / "node_modules" / "@fal-ai" / "client" / "package.json"
    if not installed.exists() or json.loads(installed.read_text())["version"] != CLIENT_VERSION:
        npm = _require("npm")
        done = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"], cwd=JS, capture_output=True, text=True, timeout=600
        )
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return node


@pytest.fixture(scope="session")
def bundle(node: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with index.html and fal.js: @fal-ai/client bundled for browsers."""
    folder = tmp_path_factory.mktemp("web")
    esbuild = JS / "node_modules" / ".bin" / "esbuild"
    done = subprocess.run(
        [
            str(esbuild),
            "browser.mjs",
            "--bundle",
            "--format=iife",
            "--platform=browser",
            f"--outfile={folder / 'fal.js'}",
        ],
        cwd=JS,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    shutil.copy(JS / "index.html", folder / "index.html")
    return folder


@dataclass
class Falemu:
    url: str  # the gateway
    app_id: str  # myteam/<alias>
    key: str
    files_url: str


@pytest.fixture(scope="module")
def falemu(tmp_path_factory: pytest.TempPathFactory, base_image: str, docker_client: Any) -> Iterator[Falemu]:
    tmp = tmp_path_factory.mktemp("js")
    alias = f"jsdemo-{secrets.token_hex(4)}"
    project = tmp / "project"
    shutil.copytree(APP, project)
    pyproject = project / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace("[tool.fal.apps.jsdemo", f"[tool.fal.apps.{alias}"))
    env = user_env(tmp, base_image, drop=("FALEMU_", "FAL_"))
    command = [sys.executable, "-m", "falemu", "up", "--project", str(project), "--owner", OWNER, "--port", "0"]
    proc = subprocess.Popen(
        [*command, "--runtime", "docker", "--gpu", "off", "--json"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    up = UpProcess(proc)
    try:
        ready = up.wait_for("Ready")
        key = (tmp / "config" / "falemu" / "default-key").read_text().strip()
        yield Falemu(url=ready["url"], app_id=f"{OWNER}/{alias}", key=key, files_url=ready["files_url"])
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        remove_app_images(docker_client, alias)


def _client(node: str, falemu: Falemu, mode: str, key: str | None) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FAL_", "FALEMU_"))}
    env.update(FALEMU_URL=falemu.url, APP_ID=falemu.app_id, MODE=mode)
    if key is not None:
        env["FAL_KEY"] = key
    done = subprocess.run([node, "client.mjs"], cwd=JS, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _check(out: dict[str, Any], falemu: Falemu) -> None:
    assert out["run"]["data"] == {"message": "Hello, js."}
    assert out["run"]["requestId"]
    assert out["invalid"]["thrown"] is True
    assert out["invalid"]["name"] == "ValidationError"
    assert out["invalid"]["status"] == 422
    assert out["invalid"]["field"] == ["body", "name"]

    sub = out["subscribe"]
    assert sub["data"] == {"message": "Done, poll.", "steps": 3}
    assert sub["statuses"][-1] == "COMPLETED"
    assert "IN_PROGRESS" in sub["statuses"] or "IN_QUEUE" in sub["statuses"]
    assert any("working on poll: step 3 of 3" in line for line in sub["logs"]), sub["logs"]

    streaming = out["subscribeStreaming"]
    assert streaming["data"] == {"message": "Done, sse.", "steps": 2}
    assert streaming["statuses"][-1] == "COMPLETED"
    assert any("working on sse" in line for line in streaming["logs"]), streaming["logs"]

    queue = out["queue"]
    assert {"request_id", "response_url", "status_url", "cancel_url"} <= set(queue["submitted"])
    assert queue["waitingStatus"] == "IN_QUEUE"
    assert queue["cancelledStatus"] == "COMPLETED"
    assert queue["busyStatus"] == "COMPLETED"
    assert queue["result"] == {"message": "Done, busy.", "steps": 4}
    assert any("working on busy: step 4 of 4" in line for line in queue["busyLogs"])

    assert [e["n"] for e in out["stream"]["events"]] == [1, 2, 3, 4]
    assert out["stream"]["last"] == {"n": 4, "text": "s 4"}

    storage = out["storage"]
    assert storage["url"].startswith(falemu.files_url)
    assert storage["downloadedSha256"] == storage["sha256"]
    assert storage["contentType"] == "image/png"
    assert storage["runner"] == {"size": 200_000, "sha256": storage["sha256"], "content_type": "image/png"}
    assert storage["auto"]["sha256"] == storage["autoSha256"]
    assert storage["auto"]["content_type"] == "text/plain"


def test_js_client_with_urls_rewritten_by_request_middleware(node: str, falemu: Falemu) -> None:
    out = _client(node, falemu, "middleware", falemu.key)
    _check(out, falemu)
    assert out["queue"]["statusUrl"].startswith(f"{falemu.url}/queue/{falemu.app_id}/requests/")


def test_js_client_through_the_server_proxy_route_without_a_key(node: str, falemu: Falemu) -> None:
    out = _client(node, falemu, "proxy", None)  # the client holds no key: the proxy adds the local one
    _check(out, falemu)
    assert out["queue"]["statusUrl"].startswith(f"https://queue.fal.run/{falemu.app_id}/requests/")


def test_proxy_refusals_auth_and_cors(falemu: Falemu) -> None:
    proxy = f"{falemu.url}/api/fal/proxy"
    greet = f"https://fal.run/{falemu.app_id}/greet"
    with httpx.Client(timeout=60) as client:
        ok = client.post(proxy, json={"name": "p"}, headers={"x-fal-target-url": greet})
        assert ok.status_code == 200
        assert ok.json() == {"message": "Hello, p."}
        assert ok.headers["x-fal-request-id"]
        for target in (
            None,
            "https://example.com/x",
            "https://fal.run.example.com/a/b",
            "https://rest.fal.ai/storage/auth/token?storage_type=fal-cdn-v3",
            "https://rest.fal.ai/storage/upload/initiate-multipart?storage_type=fal-cdn-v3",
            "https://fal.run/_falemu/ps",
            "https://fal.run/api/fal/proxy",
        ):
            headers = {"x-fal-target-url": target} if target else {}
            refused = client.post(proxy, json={}, headers=headers)
            assert refused.status_code == 400, target
            assert refused.json() == "Invalid request"
        wrong = client.post(proxy, json={"name": "p"}, headers={"x-fal-target-url": greet, "authorization": "Key a:b"})
        assert wrong.status_code == 401  # the caller's own Authorization wins, as in fal's proxy
        assert client.delete(proxy, headers={"x-fal-target-url": greet}).status_code == 405
        foreign = client.post(
            proxy, json={"name": "p"}, headers={"x-fal-target-url": greet, "origin": "https://evil.example"}
        )
        assert foreign.status_code == 403
        preflight = client.options(
            proxy,
            headers={
                "origin": "http://localhost:3000",
                "access-control-request-method": "POST",
                "access-control-request-headers": "content-type, x-fal-target-url",
            },
        )
        assert preflight.status_code == 204
        assert preflight.headers["access-control-allow-origin"] == "http://localhost:3000"
        assert preflight.headers["access-control-allow-headers"] == "content-type, x-fal-target-url"
        page = client.post(
            proxy, json={"name": "p"}, headers={"x-fal-target-url": greet, "origin": "http://127.0.0.1:5173"}
        )
        assert page.status_code == 200
        assert page.headers["access-control-allow-origin"] == "http://127.0.0.1:5173"
        assert "x-fal-request-id" in page.headers["access-control-expose-headers"]
        upload = client.post(
            proxy,
            json={"file_name": "a.txt", "content_type": "text/plain"},
            headers={"x-fal-target-url": "https://rest.fal.ai/storage/upload/initiate?storage_type=fal-cdn-v3"},
        )
        assert upload.status_code == 200
        assert urlsplit(upload.json()["upload_url"]).path.startswith("/_falemu/cdn/uploads/")


BROWSER_SCRIPT = """
async ({ gateway, appId }) => {
  fal.config({ proxyUrl: `${gateway}/api/fal/proxy` });  // in a browser the client always uses it
  const out = {};
  out.run = (await fal.run(`${appId}/greet`, { input: { name: "browser" } })).data;
  const logs = [];
  const sub = await fal.subscribe(`${appId}/work`, {
    input: { name: "page", steps: 2, delay: 0.3 },
    logs: true,
    pollInterval: 100,
    onQueueUpdate: (u) => (u.logs || []).forEach((entry) => logs.push(entry.message)),
  });
  out.subscribe = { data: sub.data, logs };
  const events = [];
  const stream = await fal.stream(`${appId}/stream`, { input: { name: "b" } });
  for await (const event of stream) events.push(event.n);
  out.stream = events;
  const bytes = new Uint8Array(50000).map((_, i) => i % 256);
  const url = await fal.storage.upload(new Blob([bytes], { type: "image/webp" }));
  const back = new Uint8Array(await (await fetch(url)).arrayBuffer());
  out.storage = { url, same: back.length === bytes.length && back.every((b, i) => b === bytes[i]) };
  out.fetched = (await fal.run(`${appId}/fetch`, { input: { url } })).data;
  return out;
}
"""


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_a_page_on_localhost_uses_the_proxy_and_the_cdn_in_chromium(bundle: Path, falemu: Falemu) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).exists():
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    handler = functools.partial(_Quiet, directory=str(bundle))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    page_url = f"http://localhost:{server.server_address[1]}/index.html"
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ]
    try:
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, args=flags)
            try:
                page = browser.new_page()
                errors: list[str] = []
                page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
                page.goto(page_url)
                out = page.evaluate(BROWSER_SCRIPT, {"gateway": falemu.url, "appId": falemu.app_id})
            finally:
                browser.close()
    finally:
        server.shutdown()
        server.server_close()
    assert out["run"] == {"message": "Hello, browser."}, errors
    assert out["subscribe"]["data"] == {"message": "Done, page.", "steps": 2}
    assert any("working on page: step 2 of 2" in line for line in out["subscribe"]["logs"])
    assert out["stream"] == [1, 2, 3, 4]
    assert out["storage"]["url"].startswith(falemu.files_url)
    assert out["storage"]["same"] is True
    assert out["fetched"]["size"] == 50000
    assert out["fetched"]["content_type"] == "image/webp"
