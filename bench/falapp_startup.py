"""Start-to-ready of the proxy fal.App example: falemu's runner against `docker run` of the same image.

Both sides start the same image (examples/proxy-app, built once before timing: its Dockerfile string,
the fal layer, the App's files) on the same engine in the same run, alternating, and are ready at the
first 2xx of GET /health, which fal's server answers once setup() has returned (here: the image
server started and answering). The baseline is what a user would script by hand::

    docker run -d -p 127.0.0.1::8080 IMAGE; docker port ...; until curl -sf .../health; do sleep 0.02; done

It also times what `falemu up` adds in front of a runner: loading the App with fal's loader (a child
interpreter that imports fal and the app module, as `fal run` does) and finding the unchanged image,
and the whole `falemu up proxy` command from launch to its "Ready" event.

Usage: python bench/falapp_startup.py [--runs 10] [--up-runs 3] [--poll 0.02]
Offline, the example's base image comes from FALEMU_BUILD_ARG_BASE_IMAGE (default falemu-base:bookworm).
Prints medians and the ratio falemu / baseline (target: at most 1.15).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "proxy-app"
sys.path.insert(0, str(ROOT))

BENCH_LABEL = "falemu.bench=falapp-startup"  # baseline containers carry it, so only they are removed


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
            .stdout.split(":")[-1]
            .strip()
        )
        url = f"http://127.0.0.1:{port}/health"
        while subprocess.run(["curl", "-sf", "-o", "/dev/null", url], check=False).returncode != 0:
            time.sleep(poll)
        return time.perf_counter() - started
    finally:
        subprocess.run(["docker", "rm", "-f", cid], capture_output=True, check=False)


def _up_to_ready(env: dict[str, str]) -> float:
    """`falemu up proxy` from launch to its Ready event (then Ctrl-C)."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "falemu", "up", "proxy", "--port", "0", "--json"],
        cwd=EXAMPLE,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if '"event": "Ready"' in line:
                return time.perf_counter() - started
        raise RuntimeError("falemu up ended before it was ready")
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--up-runs", type=int, default=3)
    parser.add_argument("--poll", type=float, default=0.02, help="baseline curl poll interval (s)")
    args = parser.parse_args()
    os.environ.setdefault("FALEMU_BUILD_ARG_BASE_IMAGE", "falemu-base:bookworm")

    from falemu.config import load_project
    from falemu.config.falapp import resolve
    from falemu.runtime.base import RunnerSpec
    from falemu.runtime.docker import DockerRuntime

    project = load_project(EXAMPLE / "pyproject.toml")
    loads: list[float] = []
    for _ in range(3):
        t0 = time.perf_counter()
        app = resolve(project, "proxy")
        loads.append(time.perf_counter() - t0)
    app = dataclasses.replace(app, alias="bench-proxy")
    runtime = DockerRuntime(reap=False)
    try:
        first = runtime.prepare(app)
        t0 = time.perf_counter()
        again = runtime.prepare(app)
        reprepare = time.perf_counter() - t0
        assert first.image is not None
        print(f"image {first.image}: built={first.built} ({first.build_seconds:.1f} s)")
        print(f"second prepare of the unchanged App: built={again.built}, {reprepare * 1000:.0f} ms")
        print(f"loading the App with fal's loader (child interpreter): median {statistics.median(loads) * 1000:.0f} ms")
        data = Path(tempfile.mkdtemp(prefix="falemu-bench-"))
        ours: list[float] = []
        theirs: list[float] = []
        _baseline(first.image, args.poll)  # warm-up of both paths, not counted
        warm = runtime.start(RunnerSpec(first, "warm", "local", data, gpu="off"))
        runtime.stop(warm, grace=0)
        for i in range(args.runs):
            order = ("falemu", "docker") if i % 2 == 0 else ("docker", "falemu")
            for side in order:
                if side == "docker":
                    theirs.append(_baseline(first.image, args.poll))
                    continue
                t0 = time.perf_counter()
                runner = runtime.start(RunnerSpec(first, f"b{i}", "local", data, gpu="off"))
                ours.append(time.perf_counter() - t0)
                runtime.stop(runner, grace=0)
        med_ours, med_theirs = statistics.median(ours), statistics.median(theirs)
        print(f"runs: {args.runs} each, alternating; baseline poll every {args.poll * 1000:.0f} ms")
        print(f"falemu runner start -> ready  : median {med_ours * 1000:.0f} ms (min {min(ours) * 1000:.0f})")
        print(f"docker run + curl loop -> ready: median {med_theirs * 1000:.0f} ms (min {min(theirs) * 1000:.0f})")
        ratio = med_ours / med_theirs
        print(f"ratio falemu/baseline: {ratio:.2f} (target <= 1.15) {'OK' if ratio <= 1.15 else 'ABOVE TARGET'}")
    finally:
        runtime.close()

    if args.up_runs:
        home = Path(tempfile.mkdtemp(prefix="falemu-bench-up-"))
        (home / "run").mkdir(mode=0o700)
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "pytest_plugin")]),
            "FALEMU_CONFIG_DIR": str(home / "config"),
            "FALEMU_DATA_DIR": str(home / "data"),
            "XDG_RUNTIME_DIR": str(home / "run"),
        }
        ups = [_up_to_ready(env) for _ in range(args.up_runs)]
        median = statistics.median(ups) * 1000
        print(
            f"`falemu up proxy` launch -> Ready (unchanged App, no rebuild): median {median:.0f} ms over "
            f"{len(ups)} runs; that is the CLI, fal's loader, the image lookup, the runner and the gateway"
        )
        print(json.dumps({"ratio": round(ratio, 3), "up_seconds": [round(u, 2) for u in ups]}))


if __name__ == "__main__":
    main()
