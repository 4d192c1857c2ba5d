"""The real fal_client against `falemu`'s whole path: Emulator, Docker runners, gateway over HTTPS.

One module-scoped emulator serves tests/apps/slow as a *private* app under a unique alias; fal_client
runs in a subprocess with the exports of `falemu env`. Runner log lines reach the queued request's
logs through the Docker runtime's log stream.
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from docker_support import remove_app_images

pytestmark = pytest.mark.docker

SLOW = Path(__file__).resolve().parents[1] / "apps" / "slow"


@dataclasses.dataclass
class Live:
    env: dict[str, str]
    app: str  # owner/alias


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, base_image: str, docker_client: Any) -> Iterator[Live]:
    from falemu.cli import cli
    from falemu.config import get_app, load_project
    from falemu.config.model import Project
    from falemu.config.settings import Settings
    from falemu.emulator import Emulator

    home = tmp_path_factory.mktemp("falemu-fal-client")
    saved = {k: os.environ.get(k) for k in ("FALEMU_CONFIG_DIR", "FALEMU_BUILD_ARG_BASE_IMAGE", "XDG_RUNTIME_DIR")}
    os.environ["FALEMU_CONFIG_DIR"] = str(home / "config")
    os.environ["FALEMU_BUILD_ARG_BASE_IMAGE"] = base_image
    os.environ["XDG_RUNTIME_DIR"] = str(home / "run")
    alias = f"fc-{secrets.token_hex(4)}"
    try:
        loaded = load_project(SLOW)
        app = dataclasses.replace(get_app(loaded, "slowpoke"), alias=alias, auth="private")
        project = Project(root=loaded.root, pyproject=loaded.pyproject, apps={"slowpoke": app})
        settings = Settings(port=0, data_dir=home / "data", runtime="docker", tls=True)
        with Emulator(project, settings, warm=True) as emulator:
            result = CliRunner().invoke(cli, ["env", "--port", str(emulator.port)])
            assert result.exit_code == 0, result.output
            env = {k: v for k, v in os.environ.items() if not k.startswith("FAL_")}
            for line in result.stdout.splitlines():
                name, _, value = line.removeprefix("export ").partition("=")
                env[name] = value.strip("'")
            yield Live(env=env, app=f"{settings.owner}/{alias}")
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        remove_app_images(docker_client, alias)


def run_client(live: Live, code: str, **env: str) -> Any:
    script = "import json, time, fal_client\n" + f"APP = {live.app!r}\n" + textwrap.dedent(code)
    proc = subprocess.run(
        [sys.executable, "-c", script], env={**live.env, **env}, capture_output=True, text=True, timeout=180
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_fal_client_operations_on_docker_runners(live: Live) -> None:
    out = run_client(
        live,
        """
        ran = fal_client.run(APP + "/record", arguments={})

        handle = fal_client.submit(APP + "/slow", arguments={})
        seen = []
        while not isinstance(status := handle.status(with_logs=True), fal_client.Completed):
            seen.append(type(status).__name__)
            time.sleep(0.1)
        time.sleep(0.5)
        status = handle.status(with_logs=True)
        result = handle.get()

        updates = []
        subscribed = fal_client.subscribe(
            APP + "/record", arguments={}, with_logs=True, on_queue_update=lambda s: updates.append(type(s).__name__)
        )

        slow = fal_client.submit(APP + "/slow", arguments={})
        while not isinstance(slow.status(), fal_client.InProgress):
            time.sleep(0.05)
        slow.cancel()  # accepted while in progress; this app has no /slow/cancel, so it runs to the end
        while not isinstance(slow.status(), fal_client.Completed):
            time.sleep(0.05)
        try:
            slow.cancel()
            second_cancel = None
        except fal_client.client.FalClientHTTPError as exc:
            second_cancel = exc.status_code

        print(json.dumps({
            "ran": ran,
            "request_id": handle.request_id,
            "seen": seen,
            "logs": [entry["message"] for entry in status.logs],
            "inference_time": status.metrics["inference_time"],
            "result": result,
            "subscribed": subscribed,
            "updates": updates,
            "second_cancel": second_cancel,
        }))
        """,
    )
    assert out["ran"]["request_id"]
    assert "slow request for 1 s" in out["logs"]
    assert out["inference_time"] >= 1.0
    assert out["result"]["slept"] == 1.0
    assert out["subscribed"]["request_id"]
    assert out["updates"][-1] == "Completed"
    assert out["second_cancel"] == 400  # ALREADY_COMPLETED


def test_private_app_refuses_a_wrong_key(live: Live) -> None:
    out = run_client(
        live,
        """
        try:
            fal_client.run(APP + "/record", arguments={})
            print(json.dumps(None))
        except fal_client.client.FalClientHTTPError as exc:
            print(json.dumps([exc.status_code, exc.message]))
        """,
        FAL_KEY="00000000-0000-0000-0000-000000000000:nope",
    )
    assert out == [401, "No user found for Key ID and Secret"]
