"""`falemu up` end to end: the example app's container through the gateway against its own port.

    python bench/gateway_docker.py [--seconds 4] [--rounds 3]

Runs the real ``falemu up`` (a subprocess, human output to a file, as in a terminal) on a copy of
``examples/direct-server`` pinned to one runner (``min_concurrency = max_concurrency = 1``, and
``max_multiplexing = 64`` so the gateway never holds back requests the container could take), then
loads ``GET /health`` through the gateway's sync URL and straight at the container's published port,
alternating rounds, with the same generator (``wrk`` when installed). Everything the user's setup
costs is in both figures: Docker's port proxy, the container's uvicorn (with its access log, which
``falemu up`` follows and prints), the sync FastAPI route. The gateway side adds falemu's gateway, its
controller, its events and its live view.

Needs a Docker engine and, offline, the base image ``falemu-base:bookworm`` (``.ci/run`` builds it).
Targets as in bench/gateway_throughput.py: >= 80 % of direct throughput, p50 added latency <= 1 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gateway_throughput import (  # a sibling script, not a package
    Result,
    free_port,
    measured,
    median_result,
    run_builtin,
    run_wrk,
    wait_port,
)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "direct-server"


def pinned_copy(into: Path) -> Path:
    """The example app, pinned to one runner that takes any number of requests at once."""
    project = into / "greeter"
    shutil.copytree(EXAMPLE, project)
    toml = project / "pyproject.toml"
    text = toml.read_text()
    text = re.sub(r"(?m)^min_concurrency = \d+$", "min_concurrency = 1", text)
    text = re.sub(r"(?m)^max_concurrency = \d+$", "max_concurrency = 1\nmax_multiplexing = 64", text)
    toml.write_text(text)
    return project


def falemu(*args: str, cwd: Path, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "falemu", *args], cwd=cwd, text=True, capture_output=True, **kwargs)


def wait_runner(project: Path, proc: subprocess.Popen[str], timeout: float = 600) -> dict[str, Any]:
    """The ps entry of the app's runner, once it is IDLE."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"falemu up exited with {proc.returncode}")
        listed = falemu("ps", "--json", cwd=project)
        if listed.returncode == 0 and listed.stdout.strip():
            for instance in json.loads(listed.stdout):
                if Path(instance["project"]).resolve() != project.resolve():
                    continue
                for app in instance["apps"]:
                    for runner in app["runners"]:
                        if runner["state"] == "IDLE":
                            return {"instance": instance, "app": app, "runner": runner}
        time.sleep(1)
    raise SystemExit("no runner became ready in time")


def container_pid(runner_id: str) -> int:
    """The host pid of the runner container's main process (its CPU is read from /proc)."""
    ids = subprocess.run(
        ["docker", "ps", "-q", "--filter", f"label=falemu.runner={runner_id}"], capture_output=True, text=True
    ).stdout.split()
    if not ids:
        return 0
    pid = subprocess.run(["docker", "inspect", "-f", "{{.State.Pid}}", ids[0]], capture_output=True, text=True)
    return int(pid.stdout.strip() or 0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=4.0, help="length of each measured round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per target (median is shown)")
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    os.environ.setdefault("FALEMU_BUILD_ARG_BASE_IMAGE", "falemu-base:bookworm")
    load = run_wrk if shutil.which("wrk") else run_builtin
    work = Path(tempfile.mkdtemp(prefix="falemu-bench-docker-"))
    project = pinned_copy(work)
    port = free_port()
    output = (work / "falemu-up.log").open("w")
    command = [sys.executable, "-m", "falemu", "up", "--port", str(port)]
    up = subprocess.Popen(command, cwd=project, stdout=output, stderr=output, text=True)
    try:
        wait_port(port, timeout=600)
        found = wait_runner(project, up)
        direct = found["runner"]["url"]
        through = found["app"]["url"]
        pids = (container_pid(found["runner"]["id"]), up.pid)
        for url in (direct, through):  # warm up both paths
            load(url + "/health", 4, 1.0)
        print(f"load generator: {'wrk' if load is run_wrk else 'built-in asyncio client'}; {os.cpu_count()} CPUs")
        print(f"runner {found['runner']['id']} at {direct}; gateway {through}")
        print(
            f"{'scenario':<10} {'conns':>5} {'target':<8} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}"
            f" {'runner CPU us/req':>18} {'falemu CPU us/req':>18}"
        )
        verdicts = []
        for name, connections in (("health", args.connections), ("serial", 1)):
            runs: dict[str, list[Result]] = {"direct": [], "gateway": []}
            for _ in range(args.rounds):
                runs["direct"].append(measured(load, direct + "/health", connections, args.seconds, pids))
                runs["gateway"].append(measured(load, through + "/health", connections, args.seconds, pids))
            d, g = median_result(runs["direct"]), median_result(runs["gateway"])
            for target, r in (("direct", d), ("gateway", g)):
                print(
                    f"{name:<10} {connections:>5} {target:<8} {r.rps:>9.0f} {r.p50_ms:>8.2f} {r.p99_ms:>8.2f}"
                    f" {r.runner_cpu_us:>18.0f} {r.gateway_cpu_us:>18.0f}"
                )
            ratio, added = g.rps / d.rps, g.p50_ms - d.p50_ms
            if connections == 1:
                verdicts.append(f"{name}: p50 added latency {added:.2f} ms (target <= 1 ms: {_ok(added <= 1)})")
            else:
                verdicts.append(
                    f"{name}: gateway throughput {ratio:.0%} of direct (target >= 80%: {_ok(ratio >= 0.8)}), "
                    f"p50 added {added:.2f} ms, p99 added {g.p99_ms - d.p99_ms:.2f} ms"
                )
        print("(falemu CPU in the direct rounds: following and printing the runner's access log)")
        print()
        for line in verdicts:
            print(line)
    finally:
        up.send_signal(signal.SIGINT)
        try:
            up.wait(timeout=60)
        except subprocess.TimeoutExpired:
            up.kill()
        output.close()
        shutil.rmtree(work, ignore_errors=True)
    return 0


def _ok(passed: bool) -> str:
    return "met" if passed else "NOT met"


if __name__ == "__main__":
    sys.exit(main())
