"""Start-to-ready time of falemu's DockerRuntime against a plain `docker run` + curl poll loop.

Both sides start the same image (the example greeter, built once before timing) on the same engine in
the same run, alternating, and are ready at the first 2xx of GET /health. The baseline is what a
user would script by hand::

    docker run -d -p 127.0.0.1::8000 IMAGE; docker port ...; until curl -sf .../health; do sleep 0.02; done

Usage: python bench/startup.py [--runs 10] [--poll 0.02]
Offline, the example's base image comes from FALEMU_BUILD_ARG_BASE_IMAGE (default falemu-base:bookworm).
Prints medians and the ratio falemu / baseline (target: at most 1.15), and the cost of a second
prepare of the unchanged app (no rebuild).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BENCH_LABEL = "falemu.bench=startup"  # baseline containers carry it, so only they are removed


def _baseline(image: str, poll: float) -> float:
    started = time.perf_counter()
    cid = subprocess.run(
        ["docker", "run", "-d", "--label", BENCH_LABEL, "-p", "127.0.0.1::8000", image],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    try:
        port = (
            subprocess.run(["docker", "port", cid, "8000/tcp"], capture_output=True, text=True, check=True)
            .stdout.split(":")[-1]
            .strip()
        )
        url = f"http://127.0.0.1:{port}/health"
        while subprocess.run(["curl", "-sf", "-o", "/dev/null", url], check=False).returncode != 0:
            time.sleep(poll)
        return time.perf_counter() - started
    finally:
        subprocess.run(["docker", "rm", "-f", cid], capture_output=True, check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--poll", type=float, default=0.02, help="baseline curl poll interval (s)")
    args = parser.parse_args()
    os.environ.setdefault("FALEMU_BUILD_ARG_BASE_IMAGE", "falemu-base:bookworm")

    from falemu.config import get_app, load_project
    from falemu.runtime.base import RunnerSpec
    from falemu.runtime.docker import DockerRuntime

    app = get_app(load_project(ROOT / "examples" / "direct-server" / "pyproject.toml"), "greeter")
    app = dataclasses.replace(app, alias="bench-greeter")
    runtime = DockerRuntime(reap=False)
    try:
        first = runtime.prepare(app)
        t0 = time.perf_counter()
        again = runtime.prepare(app)
        reprepare = time.perf_counter() - t0
        assert first.image is not None
        print(f"image {first.image}: built={first.built} ({first.build_seconds:.2f} s)")
        print(f"second prepare of the unchanged app: built={again.built}, {reprepare * 1000:.0f} ms")
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
        print(f"falemu DockerRuntime.start -> ready : median {med_ours * 1000:.0f} ms (min {min(ours) * 1000:.0f})")
        print(f"docker run + curl loop -> ready     : median {med_theirs * 1000:.0f} ms (min {min(theirs) * 1000:.0f})")
        ratio = med_ours / med_theirs
        print(f"ratio falemu/baseline: {ratio:.2f} (target <= 1.15) {'OK' if ratio <= 1.15 else 'ABOVE TARGET'}")
    finally:
        runtime.close()


if __name__ == "__main__":
    main()
