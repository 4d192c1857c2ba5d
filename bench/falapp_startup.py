"""Start-to-ready of the proxy fal.App example: the whole `falemu up` against `docker run` of the same image.

Headline: `falemu up proxy` (examples/proxy-app, its image already built and unchanged, so no rebuild)
from the launch of the process to its "Ready" line, against what a user would script by hand with the
same image on the same engine::

    docker run -d -p 127.0.0.1::8080 IMAGE; docker port ...; until curl -sf .../health; do sleep 0.02; done

"Ready" is what a user of `falemu up` waits for: the line that says where the gateway is, printed once
the gateway serves, the App's first runner has answered GET /health (fal's server answers it once
setup() has returned: here, the image server started and answering) and its endpoints are listed. After
each Ready line the script checks (untimed) that GET /health through the gateway's URL answers 2xx.
The `falemu up` time therefore includes the interpreter and CLI start, fal's loader (its cache: the App
is unchanged), finding the image, the runner's container start and the gateway; the baseline includes
the docker CLI and the curl loop. The two sides alternate, the first round of each is a warm-up (it
also writes falemu's bytecode when PYTHONDONTWRITEBYTECODE kept it from being written, as pip writes it
when it installs falemu, and leaves falemu's launch plan: the timed runs, like a user's second `falemu
up` of an unchanged project, begin the runner before the rest of falemu loads; FALEMU_PRELAUNCH=0 in the
environment measures without it).

Beside them, the floor under any launcher written in Python (bench/floor_launcher.py): the interpreter,
click, the pyproject and fal's loader (cached) through falemu's config code, then the engine's create
and start over its unix socket and the same /health poll, and nothing else. It shows what of `falemu
up`'s extra time is Python's own start before the first engine call, which no launcher in Python avoids.

Secondary: the runner alone, `DockerRuntime.start` of the same prepared App to ready (no CLI, loader or
gateway), alternating with the others; and a second prepare of the unchanged App, which must not rebuild.

Every container is labelled (baseline: falemu.bench=falapp-startup; falemu's runners carry the owner
label of the `falemu up` process that made them) and removed at the end, also after an error.

Usage: python bench/falapp_startup.py [--runs 9] [--poll 0.02]
Offline, the example's base image comes from FALEMU_BUILD_ARG_BASE_IMAGE (default falemu-base:bookworm).
Prints medians, the machine's load average with each figure, and the ratio falemu up / baseline
(target: at most 1.15).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "proxy-app"
sys.path.insert(0, str(ROOT))

BENCH_LABEL = "falemu.bench=falapp-startup"  # baseline containers carry it, so only they are removed
READY_TIMEOUT = 180.0  # a start that takes longer than this is a failure, not a figure
MAX_POLLS = int(READY_TIMEOUT / 0.02)


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _baseline(image: str, poll: float) -> float:
    started = time.perf_counter()
    cid = subprocess.run(
        ["docker", "run", "-d", "--label", BENCH_LABEL, "-p", "127.0.0.1::8080", image],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    try:
        port = (
            subprocess.run(["docker", "port", cid, "8080/tcp"], capture_output=True, text=True, check=True)
            .stdout.splitlines()[0]
            .rsplit(":", 1)[-1]
            .strip()
        )
        url = f"http://127.0.0.1:{port}/health"
        for _ in range(MAX_POLLS):
            if subprocess.run(["curl", "-sf", "-o", "/dev/null", url], check=False).returncode == 0:
                return time.perf_counter() - started
            time.sleep(poll)
        raise RuntimeError(f"the baseline container was not ready within {READY_TIMEOUT:g} s")
    finally:
        subprocess.run(["docker", "rm", "-f", cid], capture_output=True, check=False)


def _floor(image: str, env: dict[str, str]) -> float:
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "floor_launcher.py"), image, "proxy", BENCH_LABEL],
        cwd=EXAMPLE,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = proc.communicate(timeout=READY_TIMEOUT)
        elapsed = time.perf_counter() - started
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise RuntimeError(f"the floor launcher was not ready within {READY_TIMEOUT:g} s") from None
    if proc.returncode != 0 or not out.startswith("ready "):
        raise RuntimeError(f"the floor launcher failed: {err.strip() or out.strip()}")
    subprocess.run(["docker", "rm", "-f", out.split()[1]], capture_output=True, check=False)
    return elapsed


class Up:
    """`falemu up proxy --port 0 --json` from launch to its Ready line, then Ctrl-C."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.owners: list[str] = []  # falemu.owner labels of every `falemu up` started here
        self.image: str | None = None
        self.builds = 0  # `falemu up` runs that built the image (after the first, there must be none)
        self.early = 0  # runs whose runner was begun before the rest of falemu loaded (falemu.prelaunch)

    def run(self) -> float:
        started = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "falemu", "up", "proxy", "--port", "0", "--json"],
            cwd=EXAMPLE,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.owners.append(f"{proc.pid}@{socket.gethostname()}")
        try:
            assert proc.stdout is not None
            deadline = started + READY_TIMEOUT
            for line in proc.stdout:
                if '"event": "Ready"' in line:
                    elapsed = time.perf_counter() - started
                    self._check(json.loads(line)["url"])
                    return elapsed
                if '"event": "RunnerReady"' in line and json.loads(line).get("early"):
                    self.early += 1
                if '"event": "BuildFinished"' in line:
                    event = json.loads(line)
                    self.image = event["image"]
                    if not event.get("cached"):
                        self.builds += 1
                        print(f"  (falemu up built {self.image} in {event['seconds']:.1f} s)")
                if time.perf_counter() > deadline:
                    break
            raise RuntimeError("falemu up ended before it was ready: " + (proc.stderr.read() if proc.stderr else ""))
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=30)

    @staticmethod
    def _check(base_url: str) -> None:
        with urllib.request.urlopen(f"{base_url}/local/proxy/health", timeout=30) as answer:
            assert 200 <= answer.status < 300, answer.status


def _cleanup(owners: list[str]) -> int:
    filters = [["--filter", f"label={BENCH_LABEL}"]] + [["--filter", f"label=falemu.owner={o}"] for o in owners]
    removed = 0
    for flt in filters:
        ids = subprocess.run(["docker", "ps", "-aq", *flt], capture_output=True, text=True, check=False).stdout.split()
        if ids:
            subprocess.run(["docker", "rm", "-f", *ids], capture_output=True, check=False)
            removed += len(ids)
    return removed


def _median_ms(values: list[float]) -> str:
    low, high = min(values) * 1000, max(values) * 1000
    return f"median {statistics.median(values) * 1000:.0f} ms (min {low:.0f}, max {high:.0f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=9, help="timed runs of each side (at least 7)")
    parser.add_argument("--poll", type=float, default=0.02, help="baseline curl poll interval (s)")
    args = parser.parse_args()
    if args.runs < 7:
        parser.error("--runs must be at least 7")
    os.environ.setdefault("FALEMU_BUILD_ARG_BASE_IMAGE", "falemu-base:bookworm")

    home = Path(tempfile.mkdtemp(prefix="falemu-bench-up-"))
    (home / "run").mkdir(mode=0o700)
    # As an installed falemu, whose bytecode pip compiled: the warm-up run writes it when it is missing.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env = {
        **env,
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "pytest_plugin")]),
        "FALEMU_CONFIG_DIR": str(home / "config"),
        "FALEMU_DATA_DIR": str(home / "data"),
        "XDG_RUNTIME_DIR": str(home / "run"),
    }
    up = Up(env)

    from falemu.config import load_project
    from falemu.config.falapp import resolve
    from falemu.runtime.base import RunnerSpec
    from falemu.runtime.docker import DockerRuntime

    runtime = DockerRuntime(reap=False)
    try:
        print(f"load average at start: {load()}")
        up.run()  # builds the image if needed, fills fal's loader cache; not counted
        up.builds = up.early = 0
        image = up.image
        assert image is not None
        project = load_project(EXAMPLE / "pyproject.toml")
        app = resolve(project, "proxy")
        first = runtime.prepare(app)
        t0 = time.perf_counter()
        again = runtime.prepare(app)
        reprepare = time.perf_counter() - t0
        assert first.image == image, (first.image, image)
        print(f"image {image}; a second prepare of the unchanged App: built={again.built}, {reprepare * 1000:.0f} ms")
        runner_spec = dataclasses.replace(first, app=dataclasses.replace(first.app, alias="bench-proxy"))
        data = home / "data"

        def runner_only(i: int) -> float:
            t = time.perf_counter()
            runner = runtime.start(RunnerSpec(runner_spec, f"b{i}", "local", data))
            elapsed = time.perf_counter() - t
            runtime.stop(runner, grace=0)
            return elapsed

        _baseline(image, args.poll)  # warm-up, not counted
        _floor(image, env)
        runner_only(-1)
        times: dict[str, list[float]] = {"up": [], "docker": [], "floor": [], "runner": []}
        loads: list[str] = []
        sides: list[tuple[str, Any]] = [
            ("up", up.run),
            ("docker", lambda: _baseline(image, args.poll)),
            ("floor", lambda: _floor(image, env)),
            ("runner", lambda: runner_only(i)),
        ]
        for i in range(args.runs):
            loads.append(load())
            order = sides[i % len(sides) :] + sides[: i % len(sides)]
            for side, fn in order:
                times[side].append(fn())
        loads.append(load())
    finally:
        runtime.close()
        removed = _cleanup(up.owners)
        if removed:
            print(f"removed {removed} leftover container(s)")
        shutil.rmtree(home, ignore_errors=True)

    med = {side: statistics.median(values) for side, values in times.items()}
    ratio = med["up"] / med["docker"]
    print(f"runs: {args.runs} of each side, alternating; baseline polls every {args.poll * 1000:.0f} ms")
    print(f"load average (1, 5, 15 min) before each round: {'; '.join(loads)}")
    print(f"falemu up proxy, launch -> Ready : {_median_ms(times['up'])}")
    print(f"docker run + curl loop -> ready  : {_median_ms(times['docker'])}")
    print(f"ratio falemu up / baseline: {ratio:.2f} (target <= 1.15) {'OK' if ratio <= 1.15 else 'ABOVE TARGET'}")
    print(
        f"Python launcher floor -> ready   : {_median_ms(times['floor'])}, ratio {med['floor'] / med['docker']:.2f}; "
        f"falemu up / floor {med['up'] / med['floor']:.2f}"
    )
    print(f"rebuilds in the timed `falemu up` runs of the unchanged App: {up.builds}")
    print(f"timed `falemu up` runs whose runner was begun from the last run's plan: {up.early} of {args.runs}")
    print(
        f"runner alone (DockerRuntime.start -> ready): {_median_ms(times['runner'])}, "
        f"ratio {med['runner'] / med['docker']:.2f}"
    )
    print(
        json.dumps(
            {
                "ratio": round(ratio, 3),
                "runner_ratio": round(med["runner"] / med["docker"], 3),
                "floor_ratio": round(med["floor"] / med["docker"], 3),
                "rebuilds": up.builds,
                "early": up.early,
                "up": [round(u, 2) for u in times["up"]],
                "docker": [round(u, 2) for u in times["docker"]],
                "runner": [round(u, 2) for u in times["runner"]],
                "floor": [round(u, 2) for u in times["floor"]],
                "load": loads,
            }
        )
    )


if __name__ == "__main__":
    main()
