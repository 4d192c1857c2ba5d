"""Time from a saved file to the new code serving, `falemu up --watch` (rolling) against a by-hand loop.

Both sides edit the example greeter's ``server.py`` (the greeting text) in their own copy of the app,
with the layer cache warm, alternating, and stop the clock at the first answer of ``POST /greet`` with
the new text, polled every 20 ms through the same kind of URL a caller uses:

* falemu: the Emulator with the watcher (`falemu up --watch`); the file is saved, the watcher sees it,
  the image is rebuilt, a runner of the new revision starts, the gateway switches to it (rolling: the
  old runner serves until then, so there is no gap);
* baseline, what a user scripts by hand: ``docker build`` (same layer cache), ``docker rm -f`` the old
  container, ``docker run`` the new one, poll its published port (a gap while it starts).

Usage: python bench/reload.py [--runs 5]
Offline, the base image comes from FALEMU_BUILD_ARG_BASE_IMAGE (default falemu-base:bookworm).
Prints the medians, falemu's breakdown (watcher, build, runner start, switch) and the ratio.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

EXAMPLE = ROOT / "examples" / "direct-server"
BENCH_LABEL = "falemu.bench=reload"
POLL = 0.02


def edit(folder: Path, greeting: str) -> float:
    """Save server.py with a new greeting; returns the wall-clock time of the save."""
    server = folder / "server.py"
    text = server.read_text()
    start = text.index('message = f"') + len('message = f"')
    end = text.index(",", start)
    server.write_text(text[:start] + greeting + text[end:])
    return time.time()


def wait_for(url: str, greeting: str, client: httpx.Client, timeout: float = 120.0) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            response = client.post(url, json={"name": "bench"})
            if response.status_code == 200 and response.json()["message"].startswith(greeting):
                return time.time()
        except httpx.HTTPError:
            pass
        time.sleep(POLL)
    raise TimeoutError(f"{greeting} never answered at {url}")


class ByHand:
    """docker build + docker rm -f + docker run + poll: the loop a user scripts without falemu."""

    def __init__(self, folder: Path, base_image: str) -> None:
        self.folder = folder
        self.base_image = base_image
        self.tag = "falemu-bench-reload:byhand"
        self.container: str | None = None
        self.url = ""

    def build_and_run(self) -> None:
        subprocess.run(
            ["docker", "build", "-q", "-t", self.tag, "--build-arg", f"BASE_IMAGE={self.base_image}", str(self.folder)],
            check=True,
            capture_output=True,
        )
        if self.container is not None:
            subprocess.run(["docker", "rm", "-f", self.container], check=True, capture_output=True)
        self.container = subprocess.run(
            ["docker", "run", "-d", "--label", BENCH_LABEL, "-p", "127.0.0.1::8000", self.tag],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        port = subprocess.run(
            ["docker", "port", self.container, "8000/tcp"], check=True, capture_output=True, text=True
        ).stdout.split(":")[-1]
        self.url = f"http://127.0.0.1:{port.strip()}/greet"

    def close(self) -> None:
        if self.container is not None:
            subprocess.run(["docker", "rm", "-f", self.container], capture_output=True, check=False)
        subprocess.run(["docker", "rmi", "-f", self.tag], capture_output=True, check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    base_image = os.environ.setdefault("FALEMU_BUILD_ARG_BASE_IMAGE", "falemu-base:bookworm")

    from falemu.config import load_project, project_settings
    from falemu.devloop.loop import DevLoop
    from falemu.emulator import Emulator
    from falemu.events import BuildFinished, ReloadStarted, RolloutFinished, RunnerReady
    from falemu.runtime.docker import DockerRuntime

    token = secrets.token_hex(3)
    work = Path(tempfile.mkdtemp(prefix="falemu-bench-reload-"))
    ours_dir, theirs_dir = work / "falemu", work / "byhand"
    for folder in (ours_dir, theirs_dir):
        shutil.copytree(EXAMPLE, folder)
    pyproject = ours_dir / "pyproject.toml"
    pyproject.write_text(
        pyproject.read_text().replace("[tool.fal.apps.greeter]\n", '[tool.fal.apps.greeter]\nname = "bench-reload"\n')
    )
    project = load_project(ours_dir)
    settings = project_settings(project, cli={"port": 0, "gpu": "off", "data_dir": work / "data"})
    runtime = DockerRuntime(reap=False)
    emulator = Emulator(project, settings, runtime=runtime, warm=True)
    byhand = ByHand(theirs_dir, base_image)
    ours: list[float] = []
    theirs: list[float] = []
    parts: dict[str, list[float]] = {"watcher": [], "build": [], "runner start": [], "switch": []}
    try:
        emulator.start()
        loop = DevLoop(emulator).start()
        byhand.build_and_run()
        client = httpx.Client(timeout=30)
        url = emulator.app_url("greeter") + "/greet"
        wait_for(byhand.url, "Hello", client)
        for i in range(args.runs + 1):  # the first round warms both caches and is not counted
            for side in ("falemu", "byhand") if i % 2 == 0 else ("byhand", "falemu"):
                greeting = f"Hi{token}{i}{side[0]}"  # never built before: the layer cache has all but this
                if side == "byhand":
                    saved = edit(theirs_dir, greeting)
                    byhand.build_and_run()
                    took = wait_for(byhand.url, greeting, client) - saved
                    if i:
                        theirs.append(took)
                    continue
                mark = len(emulator.events.history)
                saved = edit(ours_dir, greeting)
                took = wait_for(url, greeting, client) - saved
                while not any(isinstance(e, RolloutFinished) for e in emulator.events.history[mark:]):
                    time.sleep(0.01)
                if not i:
                    continue
                ours.append(took)
                events: list[Any] = emulator.events.history[mark:]
                reload = next(e for e in events if isinstance(e, ReloadStarted))
                build = next(e for e in events if isinstance(e, BuildFinished))
                ready = next(e for e in events if isinstance(e, RunnerReady))
                finished = next(e for e in events if isinstance(e, RolloutFinished))
                parts["watcher"].append(reload.ts - saved)
                parts["build"].append(build.seconds)
                parts["runner start"].append(sum(v for k, v in ready.timeline.items() if k != "build"))
                parts["switch"].append(finished.ts - ready.ts)
        loop.stop()
        client.close()
    finally:
        emulator.stop()
        byhand.close()
        for image in runtime.client.images.list(filters={"label": "falemu.app=bench-reload"}):
            subprocess.run(["docker", "rmi", "-f", image.id], capture_output=True, check=False)
        shutil.rmtree(work, ignore_errors=True)
    med_ours, med_theirs = statistics.median(ours), statistics.median(theirs)
    print(f"runs: {args.runs} each, alternating, layer cache warm; new code polled every {POLL * 1000:.0f} ms")
    print(f"falemu up --watch (rolling), save -> new code : median {med_ours:.2f} s ({min(ours):.2f}-{max(ours):.2f})")
    print(
        f"build + rm -f + run by hand, save -> new code : median {med_theirs:.2f} s "
        f"({min(theirs):.2f}-{max(theirs):.2f})"
    )
    print(
        "falemu's parts (medians): " + ", ".join(f"{k} {statistics.median(v) * 1000:.0f} ms" for k, v in parts.items())
    )
    print(f"ratio falemu/by hand: {med_ours / med_theirs:.2f} (falemu's old revision serves until the switch; by hand")
    print("nothing answers from `docker rm -f` until the new container is up)")


if __name__ == "__main__":
    main()
