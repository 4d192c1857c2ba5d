"""The least a launcher written in Python does to start a fal.App's runner: the floor under `falemu up`.

``bench/falapp_startup.py`` runs it as a third side beside `falemu up` and `docker run`: it starts
the interpreter, imports click (any CLI does), reads the pyproject and resolves the App with
falemu's config code (fal's loader from its cache, as `falemu up` of an unchanged App), then asks
the engine over its unix socket (falemu's engine calls: the standard library's HTTP client) to
create and start a container of IMAGE, and polls the runner's ``GET /health`` every 20 ms until it
answers 2xx. It prints ``ready <container id>`` then, and exits. It does less than `falemu up` must: no check that
the image is current, no gateway, no CDN, no queue store, no GPU question, no log following.

Usage (from the App's folder): python bench/floor_launcher.py IMAGE APP LABEL
The container carries LABEL (``key=value``); the caller removes it.
"""

import sys
import time

import click  # noqa: F401  (a command line is part of any launcher)

from falemu.config import load_project
from falemu.config.falapp import resolve
from falemu.runtime.engine_api import EngineAPI, socket_path
from falemu.runtime.readiness import http_status


def main() -> None:
    image, app_name, label = sys.argv[1:4]
    path = socket_path()
    if path is None:
        raise SystemExit("the floor launcher speaks to a unix-socket engine only")
    engine = EngineAPI(path)
    app = resolve(load_project("pyproject.toml"), app_name)
    port = app.exposed_port or 8080
    key, _, value = label.partition("=")
    config = {
        "Image": image,
        "Labels": {key: value},
        "ExposedPorts": {f"{port}/tcp": {}},
        "HostConfig": {"PortBindings": {f"{port}/tcp": [{"HostIp": "127.0.0.1"}]}},
    }
    container = engine.create(f"falemu-floor-{time.monotonic_ns()}", config)
    engine.start(container)
    address = (engine.container(container) or {})["NetworkSettings"]["IPAddress"]
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
