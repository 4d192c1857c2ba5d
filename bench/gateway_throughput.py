"""Throughput and latency through falemu's gateway against the runner's own port, in one run.

    python bench/gateway_throughput.py [--seconds 4] [--rounds 3] [--connections 16]
                                       [--loop auto|asyncio|uvloop] [--http gateway|httptools]
                                       [--listener sniff|uvicorn] [--compare-sniffing]

Starts a probe runner (uvicorn, in its own process) and a gateway in front of it (its own process,
with the uvicorn options ``falemu up`` uses from :mod:`falemu.gateway.server`, on uvloop when it is
installed), then loads both with the same generator, alternating direct and gateway rounds so
background noise hits both alike. The generator is ``wrk`` when it is installed
(``apt-get install wrk``), else a small asyncio keep-alive client built in here. The gateway leases
its runner from a fixed pool (:class:`~falemu.gateway.static_pool.StaticPool`), not from the
autoscaling controller, so the controller's own per-request work is not in these figures.

Scenarios (all on one runner):
- ``fast``: the runner answers at once, 16 connections: the gateway's whole cost shows (a worst
  case: on a small machine the generator, the runner and the gateway share the same cores, so the
  ratio is the CPU the gateway adds per request, not a delay users see);
- ``5ms``: the runner takes 5 ms per request (like a small model), 16 connections;
- ``serial``: one connection, the ``fast`` route: added latency per request;
- ``5ms-serial``: one connection, the ``5ms`` route (fal's default ``max_multiplexing`` is 1).

Besides req/s and latency, each row shows the CPU time (user + system) the runner and the gateway
processes spent per request, read from ``/proc``: unlike req/s it barely moves with other work on the
machine. Targets: gateway throughput >= 80% of direct, p50 added latency <= 1 ms. Everything runs on
127.0.0.1 and every loop is bounded by ``--seconds``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Result:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int = 0
    runner_cpu_us: float = 0.0  # CPU time per request, microseconds
    gateway_cpu_us: float = 0.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux), 0 where /proc is missing."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on 127.0.0.1:{port}")


# -- the gateway process ----------------------------------------------------------------------------------


class AttachedRuntime:
    """A Runtime whose runners are servers already listening (the benchmark starts them itself)."""

    def __init__(self, port: int) -> None:
        self.port = port

    def prepare(self, app: Any, events: Any = None, verbose: bool = False) -> Any:
        from falemu.runtime.base import PreparedApp

        return PreparedApp(app=app, image=None, built=False)

    def start(self, spec: Any, events: Any = None) -> Any:
        from falemu.runtime.base import Runner

        return Runner(id=spec.runner_id, app=spec.prepared.app.alias, host="127.0.0.1", port=self.port)

    def stop(self, runner: Any, grace: float | None = None) -> None:
        pass

    def logs(self, runner: Any, follow: bool = False) -> Iterator[str]:
        return iter(())

    def is_alive(self, runner: Any) -> bool:
        return True

    def close(self) -> None:
        pass


def serve_gateway(port: int, runner_ports: dict[str, int], loop: str, http: str, pool: str, listener: str) -> None:
    """The gateway process: one app per runner, each behind the autoscaling controller ``falemu up``
    uses (one runner, ``min_concurrency = max_concurrency = 1``), or behind a fixed StaticPool."""
    import tempfile

    import uvicorn

    from falemu.config.model import AppConfig, AppShape, ScalingConfig
    from falemu.config.settings import Settings
    from falemu.events import EventBus
    from falemu.gateway import GatewayApp, create_app
    from falemu.gateway.keys import KeyStore
    from falemu.gateway.loop import new_event_loop
    from falemu.gateway.server import gateway_server_options
    from falemu.gateway.static_pool import StaticPool
    from falemu.runtime.base import PreparedApp, Runner, RunnerSpec
    from falemu.scaling.controller import AppController
    from falemu.scaling.pool import RunnerPool

    if loop == "asyncio":
        event_loop = asyncio.new_event_loop()
    elif loop == "uvloop":
        import uvloop

        event_loop = uvloop.new_event_loop()
    else:
        event_loop = new_event_loop()
    asyncio.set_event_loop(event_loop)
    events = EventBus(history=1000)
    apps: dict[str, GatewayApp] = {}
    for alias, runner_port in runner_ports.items():
        scaling = ScalingConfig(min_concurrency=1, max_concurrency=1, max_multiplexing=10_000, keep_alive=3600)
        config = AppConfig(
            name=alias, alias=alias, shape=AppShape.DIRECT_SERVER, project_root=ROOT, auth="public", scaling=scaling
        )
        runner_pool: RunnerPool
        if pool == "static":
            runner_pool = StaticPool(config, [Runner(id=f"{alias}-0", app=alias, host="127.0.0.1", port=runner_port)])
        else:
            spec = RunnerSpec(
                prepared=PreparedApp(app=config, image=None, built=False),
                runner_id="",
                owner="local",
                data_dir=Path(tempfile.mkdtemp(prefix="falemu-bench-data-")),
            )
            controller = AppController(config, AttachedRuntime(runner_port), spec, events=events)  # type: ignore[arg-type]
            event_loop.run_until_complete(controller.start())
            runner_pool = controller
        apps[alias] = GatewayApp(config, runner_pool)
    keys = KeyStore(Path(tempfile.mkdtemp(prefix="falemu-bench-")))
    gateway = create_app(apps, settings=Settings(), events=events, keys=keys)
    options = gateway_server_options()
    if http != "gateway":
        options["http"] = http
    from falemu.gateway.listener import GatewayServer

    server_class = GatewayServer if listener == "sniff" else uvicorn.Server
    server = server_class(uvicorn.Config(gateway, host="127.0.0.1", port=port, **options))
    print(
        f"gateway: {type(event_loop).__module__}.{type(event_loop).__name__}, http={http}, pool={pool}, "
        f"listener={listener}",
        flush=True,
    )
    event_loop.run_until_complete(server.serve())


# -- load generators --------------------------------------------------------------------------------------

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _wrk_value(text: str, label: str) -> float:
    match = re.search(rf"^\s*{re.escape(label)}\s+([\d.]+)(us|ms|s)\s*$", text, re.MULTILINE)
    if not match:
        raise SystemExit(f"could not read {label} from wrk:\n{text}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def run_wrk(url: str, connections: int, seconds: float, headers: dict[str, str] | None = None) -> Result:
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency", url]
    for name, value in (headers or {}).items():
        cmd[1:1] = ["-H", f"{name}: {value}"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=seconds + 30).stdout
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not match or "Non-2xx" in out or "Socket errors" in out:
        raise SystemExit(f"wrk run failed or saw errors:\n{out}")
    done = re.search(r"(\d+) requests in", out)
    requests = int(done.group(1)) if done else 0
    return Result(float(match.group(1)), _wrk_value(out, "50%"), _wrk_value(out, "99%"), requests)


async def _connection(host: str, port: int, request: bytes, stop: float, latencies: list[float]) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.perf_counter() < stop:
            start = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            if length:
                await reader.readexactly(length)
            latencies.append(time.perf_counter() - start)
    finally:
        writer.close()


def run_builtin(url: str, connections: int, seconds: float, headers: dict[str, str] | None = None) -> Result:
    rest = url.split("://", 1)[1]
    hostport, _, path = rest.partition("/")
    host, _, port = hostport.partition(":")
    extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
    request = f"GET /{path} HTTP/1.1\r\nHost: {hostport}\r\n{extra}\r\n".encode()
    latencies: list[float] = []

    async def main() -> float:
        stop = time.perf_counter() + seconds
        start = time.perf_counter()
        await asyncio.gather(*(_connection(host, int(port), request, stop, latencies) for _ in range(connections)))
        return time.perf_counter() - start

    elapsed = asyncio.run(main())
    latencies.sort()
    p50 = latencies[len(latencies) // 2] * 1e3
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1e3
    return Result(len(latencies) / elapsed, p50, p99, len(latencies))


# -- the run ----------------------------------------------------------------------------------------------


def median_result(results: list[Result]) -> Result:
    return Result(
        statistics.median(r.rps for r in results),
        statistics.median(r.p50_ms for r in results),
        statistics.median(r.p99_ms for r in results),
        sum(r.requests for r in results),
        statistics.median(r.runner_cpu_us for r in results),
        statistics.median(r.gateway_cpu_us for r in results),
    )


def measured(
    load: Callable[[str, int, float], Result], url: str, connections: int, seconds: float, pids: tuple[int, int]
) -> Result:
    """One load round, with the CPU the runner and gateway processes spent per request during it."""
    before = [cpu_seconds(pid) for pid in pids]
    result = load(url, connections, seconds)
    after = [cpu_seconds(pid) for pid in pids]
    if result.requests:
        result.runner_cpu_us = (after[0] - before[0]) * 1e6 / result.requests
        result.gateway_cpu_us = (after[1] - before[1]) * 1e6 / result.requests
    return result


RUNNERS = {
    # alias: (uvicorn app, extra uvicorn arguments)
    "probe": ("falemu.gateway.probe:app", []),
    "api": ("fastapi_runner:app", ["--app-dir", str(ROOT / "bench")]),
}

SCENARIOS = [
    # name, app, path, connections
    ("fastapi", "api", "/fast", 16),
    ("asgi", "probe", "/fast", 16),
    ("5ms", "probe", "/sleep?s=0.005", 16),
    ("serial", "probe", "/fast", 1),
    ("5ms-serial", "probe", "/sleep?s=0.005", 1),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=4.0, help="length of each measured round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per scenario and target (median is shown)")
    parser.add_argument("--connections", type=int, default=16, help="concurrent connections of the loaded rounds")
    parser.add_argument("--builtin", action="store_true", help="use the built-in generator even if wrk exists")
    parser.add_argument(
        "--loop",
        choices=("auto", "asyncio", "uvloop"),
        default="auto",
        help="the gateway's event loop (auto: as falemu up)",
    )
    parser.add_argument(
        "--http",
        choices=("gateway", "httptools", "h11", "floor"),
        default="gateway",
        help="the gateway's HTTP protocol: falemu's (fast path, coalesced writes) or a stock uvicorn one "
        "(every request through the ASGI app); floor: bench/floor_proxy.py instead of falemu's gateway",
    )
    parser.add_argument(
        "--pool",
        choices=("controller", "static"),
        default="controller",
        help="what leases runners: the autoscaling controller (as falemu up) or a fixed pool",
    )
    parser.add_argument(
        "--listener",
        choices=("sniff", "uvicorn"),
        default="sniff",
        help="how the gateway accepts connections: falemu's (HTTP and HTTPS on one port, told apart by the "
        "first byte) or uvicorn's loop.create_server (plain HTTP only)",
    )
    parser.add_argument(
        "--compare-sniffing",
        action="store_true",
        help="only compare the gateway's CPU per forwarded request with and without sniffing: two gateways, "
        "alternating rounds, medians (kept-alive connections, and a new connection per request with wrk)",
    )
    parser.add_argument("--only", nargs="*", metavar="SCENARIO", help="run only these scenarios")
    parser.add_argument("--serve-gateway", nargs="+", metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_gateway:
        port, *pairs = args.serve_gateway
        runner_ports = {alias: int(p) for alias, _, p in (pair.partition("=") for pair in pairs)}
        serve_gateway(int(port), runner_ports, args.loop, args.http, args.pool, args.listener)
        return 0
    if args.compare_sniffing:
        return compare_sniffing(args)

    use_wrk = shutil.which("wrk") is not None and not args.builtin
    load = run_wrk if use_wrk else run_builtin
    ports = {alias: free_port() for alias in RUNNERS}
    gateway_port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    quiet = ["--log-level", "warning", "--no-access-log", "--no-server-header", "--no-date-header"]
    runners = {
        alias: subprocess.Popen(
            [sys.executable, "-m", "uvicorn", target, *extra, "--port", str(ports[alias]), *quiet], env=env, cwd=ROOT
        )
        for alias, (target, extra) in RUNNERS.items()
    }
    gateway_args = [str(gateway_port), *(f"{alias}={port}" for alias, port in ports.items())]
    if args.http == "floor":
        gateway_command = [sys.executable, str(ROOT / "bench" / "floor_proxy.py"), *gateway_args]
    else:
        gateway_command = [sys.executable, __file__, "--serve-gateway", *gateway_args]
        gateway_command += ["--loop", args.loop, "--http", args.http, "--pool", args.pool, "--listener", args.listener]
    gateway_proc = subprocess.Popen(
        gateway_command,
        env=env,
        cwd=ROOT,
    )
    procs = [*runners.values(), gateway_proc]
    try:
        for port in [*ports.values(), gateway_port]:
            wait_port(port)
        scenarios = [(n, *rest) for n, *rest in SCENARIOS if not args.only or n in args.only]
        for alias, port in ports.items():  # warm up connections and code paths
            load(f"http://127.0.0.1:{port}/fast", 4, 1.0)
            load(f"http://127.0.0.1:{gateway_port}/local/{alias}/fast", 4, 1.0)
        load_avg = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        print(f"load generator: {'wrk' if use_wrk else 'built-in asyncio client'}; {os.cpu_count()} CPUs")
        print("runners: uvicorn (loop auto) with falemu's probe app (bare ASGI) and a FastAPI app;")
        print("generator, runner and gateway share the CPUs")
        print(f"load average before: {load_avg} (other work on the machine skews both targets alike)")
        print(
            f"{'scenario':<10} {'conns':>5} {'target':<8} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}"
            f" {'runner CPU us/req':>18} {'gateway CPU us/req':>19}"
        )
        verdicts: list[str] = []
        for name, alias, path, connections in scenarios:
            if connections > 1:
                connections = args.connections
            direct_url = f"http://127.0.0.1:{ports[alias]}{path}"
            gateway_url = f"http://127.0.0.1:{gateway_port}/local/{alias}{path}"
            pids = (runners[alias].pid, gateway_proc.pid)
            runs: dict[str, list[Result]] = {"direct": [], "gateway": []}
            for _ in range(args.rounds):
                runs["direct"].append(measured(load, direct_url, connections, args.seconds, pids))
                runs["gateway"].append(measured(load, gateway_url, connections, args.seconds, pids))
            direct, gateway = median_result(runs["direct"]), median_result(runs["gateway"])
            for target, r in (("direct", direct), ("gateway", gateway)):
                gateway_cpu = f"{r.gateway_cpu_us:>19.0f}" if target == "gateway" else f"{'-':>19}"
                print(
                    f"{name:<10} {connections:>5} {target:<8} {r.rps:>9.0f} {r.p50_ms:>8.2f} {r.p99_ms:>8.2f}"
                    f" {r.runner_cpu_us:>18.0f} {gateway_cpu}"
                )
            ratio = gateway.rps / direct.rps
            added = gateway.p50_ms - direct.p50_ms
            added99 = gateway.p99_ms - direct.p99_ms
            if connections == 1:
                verdicts.append(
                    f"{name}: p50 added latency {added:.2f} ms (target <= 1 ms: {_ok(added <= 1.0)}), "
                    f"p99 added {added99:.2f} ms"
                )
            else:
                verdicts.append(
                    f"{name}: gateway throughput {ratio:.0%} of direct (target >= 80%: {_ok(ratio >= 0.8)}), "
                    f"p50 added {added:.2f} ms, p99 added {added99:.2f} ms"
                )
        print(f"load average after: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
        print()
        for line in verdicts:
            print(line)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
    return 0


def compare_sniffing(args: argparse.Namespace) -> int:
    """The gateway's CPU per forwarded request with falemu's accept loop (first-byte sniffing) and with
    uvicorn's, in one run: two gateway processes in front of one probe runner, alternating rounds."""
    use_wrk = shutil.which("wrk") is not None and not args.builtin
    load = run_wrk if use_wrk else run_builtin
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    runner_port = free_port()
    quiet = ["--log-level", "warning", "--no-access-log", "--no-server-header", "--no-date-header"]
    runner = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "falemu.gateway.probe:app", "--port", str(runner_port), *quiet], env=env
    )
    gateways: dict[str, tuple[int, subprocess.Popen[bytes]]] = {}
    for listener in ("uvicorn", "sniff"):
        port = free_port()
        command = [sys.executable, __file__, "--serve-gateway", str(port), f"probe={runner_port}"]
        command += ["--loop", args.loop, "--http", args.http, "--pool", args.pool, "--listener", listener]
        gateways[listener] = (port, subprocess.Popen(command, env=env, cwd=ROOT))
    procs = [runner, *(proc for _, proc in gateways.values())]
    try:
        for port in [runner_port, *(port for port, _ in gateways.values())]:
            wait_port(port)
        for port, _ in gateways.values():
            load(f"http://127.0.0.1:{port}/local/probe/fast", 4, 1.0)
        scenarios = [("kept-alive", args.connections, False), ("serial", 1, False)]
        if use_wrk:
            scenarios.append(("new-conn", args.connections, True))
        print(f"load generator: {'wrk' if use_wrk else 'built-in asyncio client'}; {os.cpu_count()} CPUs")
        print(f"{'scenario':<11} {'conns':>5} {'listener':<8} {'req/s':>9} {'gateway CPU us/req':>19}")
        verdicts = []
        for name, connections, close in scenarios:
            runs: dict[str, list[Result]] = {"uvicorn": [], "sniff": []}
            for _ in range(args.rounds):
                for listener, (port, proc) in gateways.items():
                    url = f"http://127.0.0.1:{port}/local/probe/fast"
                    loader: Callable[[str, int, float], Result] = (
                        (lambda u, c, s: run_wrk(u, c, s, headers={"Connection": "close"})) if close else load
                    )
                    runs[listener].append(measured(loader, url, connections, args.seconds, (runner.pid, proc.pid)))
            medians = {listener: median_result(results) for listener, results in runs.items()}
            for listener, r in medians.items():
                print(f"{name:<11} {connections:>5} {listener:<8} {r.rps:>9.0f} {r.gateway_cpu_us:>19.0f}")
            ratio = medians["sniff"].gateway_cpu_us / medians["uvicorn"].gateway_cpu_us
            verdicts.append(f"{name}: CPU per request with sniffing {ratio:.1%} of without")
        print()
        for line in verdicts:
            print(line)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
    return 0


def _ok(passed: bool) -> str:
    return "met" if passed else "NOT met"


if __name__ == "__main__":
    sys.exit(main())
