"""`falemu up` end to end: an app's container through the gateway, against its own port and nginx.

    python bench/gateway_docker.py [--variant realistic|plain] [--seconds 4] [--rounds 3]

Runs the real ``falemu up`` (a subprocess, human output to a file, as in a terminal) on an app pinned
to one runner (``min_concurrency = max_concurrency = 1``, ``max_multiplexing = 64``, so the gateway never
holds back requests the container could take), then loads it through the gateway's sync URL, straight
at the container's published port, and through nginx ``proxy_pass`` to that same port (the peer proxy,
when nginx is installed), alternating rounds, with the same generator (``wrk`` when installed).

Variants:

* ``realistic`` (default): ``bench/apps/chatty``, a *private* app (every request carries a key the
  gateway checks) whose server writes two log lines per request, uvicorn's access log and one line of
  the app's own logger, which ``falemu up`` follows and prints; ``GET /work``.
* ``plain``: the public ``examples/direct-server`` app, ``GET /health`` (one access-log line per request).

Everything the user's setup costs is in every figure: Docker's port proxy, the container's uvicorn and
its logging, the sync FastAPI route. The gateway side adds falemu's gateway, key check, controller,
events and live view. Needs a Docker engine and, offline, the base image ``falemu-base:bookworm``
(``.ci/run`` builds it). Targets: >= 80 % of direct throughput at 16 connections, p50 added latency
<= 1 ms on one connection.
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
from functools import partial
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
CHATTY = ROOT / "bench" / "apps" / "chatty"


def pinned_copy(into: Path, variant: str) -> tuple[Path, str]:
    """The variant's app, pinned to one runner that takes any number of requests at once; and its path."""
    if variant == "realistic":
        project = into / "chatty"
        shutil.copytree(CHATTY, project)
        return project, "/work"
    project = into / "greeter"
    shutil.copytree(EXAMPLE, project)
    toml = project / "pyproject.toml"
    text = toml.read_text()
    text = re.sub(r"(?m)^min_concurrency = \d+$", "min_concurrency = 1", text)
    text = re.sub(r"(?m)^max_concurrency = \d+$", "max_concurrency = 1\nmax_multiplexing = 64", text)
    toml.write_text(text)
    return project, "/health"


NGINX_CONF = """
worker_processes 1;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log;
events {{ worker_connections 1024; }}
http {{
    access_log {work}/nginx-access.log;
    upstream runner {{ server {upstream}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://runner;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""


def start_nginx(work: Path, upstream: str) -> tuple[subprocess.Popen[bytes], str] | None:
    """nginx proxy_pass in front of ``upstream`` (host:port), one worker; None without nginx."""
    binary = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if binary is None:
        return None
    port = free_port()
    conf = work / "nginx.conf"
    conf.write_text(NGINX_CONF.format(work=work, upstream=upstream, port=port))
    proc = subprocess.Popen(
        [binary, "-p", str(work), "-c", str(conf), "-g", "daemon off;"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_port(port, timeout=20)
    return proc, f"http://127.0.0.1:{port}"


def nginx_worker_pid(master: int) -> int:
    children = Path(f"/proc/{master}/task/{master}/children")
    try:
        pids = [int(p) for p in children.read_text().split()]
    except OSError:
        return master
    return pids[0] if pids else master


def falemu(*args: str, cwd: Path, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "falemu", *args], cwd=cwd, text=True, capture_output=True, **kwargs)


def wait_runner(project: Path, proc: subprocess.Popen[str], timeout: float = 600) -> dict[str, Any]:
    """The ps entry of the app's runner, once it is IDLE."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log = project.parent / "falemu-up.log"
            tail = log.read_text().strip().splitlines()[-5:] if log.exists() else []
            raise SystemExit(f"falemu up exited with {proc.returncode}:\n" + "\n".join(tail))
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
    parser.add_argument("--variant", choices=["realistic", "plain"], default="realistic")
    parser.add_argument("--seconds", type=float, default=4.0, help="length of each measured round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per target (median is shown)")
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    os.environ.setdefault("FALEMU_BUILD_ARG_BASE_IMAGE", "falemu-base:bookworm")
    load = run_wrk if shutil.which("wrk") else run_builtin
    work = Path(tempfile.mkdtemp(prefix="falemu-bench-docker-"))
    project, path = pinned_copy(work, args.variant)
    port = free_port()
    output = (work / "falemu-up.log").open("w")
    command = [sys.executable, "-m", "falemu", "up", "--port", str(port)]
    up = subprocess.Popen(command, cwd=project, stdout=output, stderr=output, text=True)
    nginx: tuple[subprocess.Popen[bytes], str] | None = None
    try:
        wait_port(port, timeout=600)
        found = wait_runner(project, up)
        direct = found["runner"]["url"]
        through = found["app"]["url"]
        headers: dict[str, str] = {}
        if found["app"]["auth"] != "public":
            from falemu.gateway.keys import KeyStore

            headers = {"Authorization": f"Key {KeyStore().default_key()}"}
        container = container_pid(found["runner"]["id"])
        targets: dict[str, tuple[str, int]] = {"direct": (direct, up.pid), "gateway": (through, up.pid)}
        nginx = start_nginx(work, direct.split("://", 1)[1])
        if nginx is not None:
            targets["nginx"] = (nginx[1], nginx_worker_pid(nginx[0].pid))
        for url, _ in targets.values():  # warm up every path
            load(url + path, 4, 1.0, headers)
        print(f"variant {args.variant}: {project.name}, GET {path}, auth {found['app']['auth']}")
        print(f"load generator: {'wrk' if load is run_wrk else 'built-in asyncio client'}; {os.cpu_count()} CPUs")
        print(
            f"runner {found['runner']['id']} at {direct}; gateway {through}" + (f"; nginx {nginx[1]}" if nginx else "")
        )
        print(
            f"{'scenario':<10} {'conns':>5} {'target':<8} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}"
            f" {'runner CPU us/req':>18} {'proxy CPU us/req':>17}"
        )
        verdicts = []
        for name, connections in (("load", args.connections), ("serial", 1)):
            runs: dict[str, list[Result]] = {target: [] for target in targets}
            for _ in range(args.rounds):
                for target, (url, pid) in targets.items():
                    runs[target].append(
                        measured(
                            partial(load, headers=headers), url + path, connections, args.seconds, (container, pid)
                        )
                    )
            medians = {target: median_result(results) for target, results in runs.items()}
            for target, r in medians.items():
                print(
                    f"{name:<10} {connections:>5} {target:<8} {r.rps:>9.0f} {r.p50_ms:>8.2f} {r.p99_ms:>8.2f}"
                    f" {r.runner_cpu_us:>18.0f} {r.gateway_cpu_us:>17.0f}"
                )
            d, g = medians["direct"], medians["gateway"]
            n = medians.get("nginx")
            peer = ""
            if n is not None:
                peer = (
                    f"; nginx {n.rps / d.rps:.0%}, p50 added {n.p50_ms - d.p50_ms:.2f} ms"
                    if connections > 1
                    else f"; nginx adds {n.p50_ms - d.p50_ms:.2f} ms"
                )
            ratio, added = g.rps / d.rps, g.p50_ms - d.p50_ms
            if connections == 1:
                verdicts.append(f"{name}: p50 added latency {added:.2f} ms (target <= 1 ms: {_ok(added <= 1)}){peer}")
            else:
                verdicts.append(
                    f"{name}: gateway throughput {ratio:.0%} of direct (target >= 80%: {_ok(ratio >= 0.8)}), "
                    f"p50 added {added:.2f} ms, p99 added {g.p99_ms - d.p99_ms:.2f} ms{peer}"
                )
        print("(proxy CPU in the direct rounds: falemu following and printing the runner's log lines)")
        print()
        for line in verdicts:
            print(line)
    finally:
        if nginx is not None:
            nginx[0].terminate()
            nginx[0].wait(timeout=20)
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
