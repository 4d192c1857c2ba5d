"""The least a launcher written in Python does to start a fal.App's runner: the floor under `falemu up`.

``bench/falapp_startup.py`` runs it as a third side beside `falemu up` and `docker run`: it starts
the interpreter, imports click (any CLI does), reads the pyproject and resolves the App with
falemu's config code (fal's loader from its cache, as `falemu up` of an unchanged App), then asks
the engine over its unix socket, with the standard library's HTTP client, to create and start a
container of IMAGE, and polls the runner's ``GET /health`` every 20 ms until it answers 2xx. It
prints ``ready <container id>`` then, and exits. It does less than `falemu up` must: no check that
the image is current, no gateway, no CDN, no queue store, no GPU question, no log following.

Usage (from the App's folder): python bench/floor_launcher.py IMAGE APP LABEL
The container carries LABEL (``key=value``); the caller removes it.
"""

import http.client
import json
import os
import socket
import sys
import time

import click  # noqa: F401  (a command line is part of any launcher)

from falemu.config import load_project
from falemu.config.falapp import resolve
from falemu.runtime.readiness import http_status


class _EngineConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=60)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self._path)


def _call(path: str, method: str, url: str, body: object = None) -> object:
    connection = _EngineConnection(path)
    try:
        data = json.dumps(body).encode() if body is not None else None
        connection.request(method, url, body=data, headers={"Content-Type": "application/json"})
        answer = connection.getresponse()
        raw = answer.read()
        if answer.status >= 300:
            raise SystemExit(f"engine: {method} {url}: {answer.status} {raw[:200]!r}")
        return json.loads(raw) if raw else None
    finally:
        connection.close()


def main() -> None:
    image, app_name, label = sys.argv[1:4]
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if not host.startswith("unix://"):
        raise SystemExit("the floor launcher speaks to a unix-socket engine only")
    engine = host.removeprefix("unix://")
    app = resolve(load_project("pyproject.toml"), app_name)
    port = app.exposed_port or 8080
    key, _, value = label.partition("=")
    created = _call(
        engine,
        "POST",
        "/containers/create",
        {
            "Image": image,
            "Labels": {key: value},
            "ExposedPorts": {f"{port}/tcp": {}},
            "HostConfig": {"PortBindings": {f"{port}/tcp": [{"HostIp": "127.0.0.1"}]}},
        },
    )
    assert isinstance(created, dict)
    container = str(created["Id"])
    _call(engine, "POST", f"/containers/{container}/start")
    info = _call(engine, "GET", f"/containers/{container}/json")
    assert isinstance(info, dict)
    address = info["NetworkSettings"]["IPAddress"]
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        status = http_status(address, port, "/health", 2.0)
        if status is not None and 200 <= status < 300:
            print(f"ready {container}", flush=True)
            return
        time.sleep(0.02)
    raise SystemExit(f"not ready within 180 s: {container}")


if __name__ == "__main__":
    main()
