"""The dashboard under a full history: first-page time in Chromium, and what recording costs the gateway.

    python bench/dashboard.py [--requests 10000] [--loads 9] [--rounds 25] [--seconds 3]
                              [--connections 16] [--only page cpu]

Everything runs on 127.0.0.1: a probe runner (``falemu.gateway.probe``, uvicorn, its own process) and
gateways in front of it, each its own process running :class:`~falemu.emulator.Emulator` as
``falemu up`` does (the autoscaling controller, the dashboard wired by the ``dashboard`` setting,
uvloop when installed), with a runtime that attaches to the probe instead of starting containers.

``page``: one gateway's history is filled with ``--requests`` real requests sent through it (a mix of
endpoints, statuses 200/404/422/500, sync and queue, JSON bodies of 40 B to 4 KiB, some with
``X-Fal-Store-IO: 0``), a baseline gateway's with 100 (two pages of the Requests view). Headless
Chromium (Debian's, driven by Playwright; a fresh browser context per load, so nothing is cached)
then loads, alternating full and baseline, ``/`` and ``/#/requests``. A load's time runs from the
navigation's start (``performance.timeOrigin``) to the first frame painted after the page shows its
content, observed in the page itself (a MutationObserver, then ``requestAnimationFrame``):

- ``/``: the app's card and at least one row of the runners table;
- ``/#/requests``: the first page of rows (50, or all there are) and the "N matching of M kept" line
  with M the history's whole size.

Target: under 1 s with 10,000 requests (the median of ``--loads`` loads).

``cpu``: two gateways, the dashboard on (history and body recording) and off, in front of the same
runner; ``wrk`` loads them in alternating rounds, POSTing a small JSON body (sync: the runner's
``/fast``; queue: ``/queue/.../fast``, each round then waits until its queue has run dry). The CPU time
(user + system, from ``/proc``) the gateway process spent per request is the figure, median of
``--rounds`` (25: on a shared 2-core machine one round's figure moves by a quarter either way, and
nine rounds left the verdict 1.00 to 1.16 for the same code); unlike req/s it moves little with other
work on the machine. The verdict takes each on round against the off round next to it (the median of
those ratios), so slow drifts of a shared machine cancel out. Target: on <= 1.10 x off.
Every loop is bounded by ``--seconds``, ``--loads``, ``--rounds`` and timeouts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gateway_throughput import AttachedRuntime, _wrk_value, cpu_seconds, free_port, wait_port

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
APP = "probe"
SMALL_BODY = '{"prompt": "a cat in a hat, watercolor", "seed": 42, "steps": 4}'
BASELINE_REQUESTS = 100  # two pages of the Requests view

# -- the gateway process ------------------------------------------------------------------------------------


class ProbeRuntime(AttachedRuntime):
    """Runners are the probe server the benchmark started (one runner, like the process runtime)."""

    name = "process"


def serve_gateway(port: int, runner_port: int, dashboard: bool, home: Path) -> None:
    """A falemu gateway (Emulator, as ``falemu up``) for one app in front of the probe runner.

    Besides falemu's routes it answers ``/_bench/queue`` with the number of queued requests that have
    not finished, so a queue round can wait until its queue ran dry.
    """
    from falemu.config.model import AppConfig, AppShape, Project, ScalingConfig
    from falemu.config.settings import Settings
    from falemu.emulator import Emulator

    scaling = ScalingConfig(min_concurrency=1, max_concurrency=1, max_multiplexing=10_000, keep_alive=3600)
    config = AppConfig(
        name=APP, alias=APP, shape=AppShape.DIRECT_SERVER, project_root=ROOT, auth="public", scaling=scaling
    )
    project = Project(root=ROOT, pyproject=ROOT / "pyproject.toml", apps={APP: config})
    settings = Settings(
        port=port, data_dir=home / "data", files_dir=home / "files", runtime="process", dashboard=dashboard
    )
    emulator = Emulator(project, settings, runtime=ProbeRuntime(runner_port))  # type: ignore[arg-type]
    emulator.start()
    gateway = emulator.gateway
    assert gateway is not None

    async def queue_state(scope: Any, receive: Any, send: Any) -> None:
        body = json.dumps({"unfinished": len(gateway.queue._tasks)}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    gateway.mount("/_bench/queue", queue_state, exact=True)
    print(f"ready {emulator.base_url} dashboard={'on' if dashboard else 'off'}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        emulator.stop()


class Gateway:
    """A gateway process started by this benchmark."""

    def __init__(self, runner_port: int, dashboard: bool, home: Path, env: dict[str, str], into: list[Any]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.dashboard = dashboard
        command = [sys.executable, __file__, "--serve-gateway", str(self.port), str(runner_port)]
        command += ["--dashboard", "on" if dashboard else "off", "--home", str(home)]
        env = {**env, "XDG_CACHE_HOME": str(home / "cache")}  # its own queue store (one per falemu up)
        self.proc = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True)
        into.append(self)  # stopped by whoever started it, whatever happens next
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # the process exits (and this returns "") if it cannot start
        if not line.startswith("ready "):
            self.stop()
            raise SystemExit(f"the gateway did not start (dashboard {'on' if dashboard else 'off'})")
        wait_port(self.port)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        stop_process(self.proc)


def stop_process(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def queue_unfinished(base: str) -> int:
    import httpx

    return int(httpx.get(f"{base}/_bench/queue", timeout=10).json()["unfinished"])


def wait_queue_dry(base: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while queue_unfinished(base):
        if time.monotonic() > deadline:
            raise SystemExit(f"the queue of {base} did not run dry in {timeout:g} s")
        time.sleep(0.05)


# -- filling a history -----------------------------------------------------------------------------------

# (share, mode, method, endpoint, body size or None, store_io): the mix sent to fill a history
MIX = [
    (30, "sync", "POST", "/generate", 400, True),
    (10, "sync", "POST", "/embed", 40, True),
    (8, "sync", "GET", "/fast", None, True),
    (5, "sync", "POST", "/generate", 4000, True),
    (3, "sync", "POST", "/status/422", 200, True),
    (2, "sync", "GET", "/status/404", None, True),
    (2, "sync", "POST", "/status/500", 200, True),
    (2, "sync", "POST", "/private", 300, False),
    (25, "queue", "POST", "/generate", 400, True),
    (8, "queue", "POST", "/upscale", 2000, True),
    (3, "queue", "POST", "/status/500", 200, True),
    (2, "queue", "POST", "/status/422", 200, True),
]


def plan(count: int) -> Iterator[tuple[str, str, str, bytes | None, bool]]:
    """``count`` requests in a fixed interleaving of :data:`MIX`."""
    wheel = [entry for entry in MIX for _ in range(entry[0])]
    for i in range(count):
        _, mode, method, endpoint, size, store = wheel[(i * 37) % len(wheel)]  # 37 is prime to 100: a spread
        body = None
        if size is not None:
            filler = "x" * max(0, size - 40)
            body = json.dumps({"prompt": f"request {i} {filler}", "seed": i, "steps": 4}).encode()
        yield mode, method, endpoint, body, store


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str, method: str, path: str,
    body: bytes | None, extra: dict[str, str],
) -> tuple[int, bytes]:  # fmt: skip
    """One request on a kept-alive connection: (status, body). Answers must carry Content-Length."""
    head = f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in extra.items())
    if body is not None:
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    writer.write(head.encode() + b"\r\n" + (body or b""))
    lines = (await reader.readuntil(b"\r\n\r\n")).split(b"\r\n")
    length = next((int(line[15:]) for line in lines if line[:15].lower() == b"content-length:"), None)
    if length is None:
        raise SystemExit(f"{method} {path}: an answer without Content-Length")
    return int(lines[0].split()[1]), await reader.readexactly(length)


async def fill(base: str, count: int, connections: int = 16, timeout: float = 600.0) -> float:
    """Send ``count`` requests of the mix through the gateway; wait until every one has finished.

    A small keep-alive HTTP/1.1 client (as fast as the gateway lets it, unlike httpx on a busy machine).
    """
    started = time.perf_counter()
    todo = iter(plan(count))
    errors: list[str] = []
    host = base.split("://", 1)[1]
    hostname, _, port = host.partition(":")

    async def worker() -> None:
        reader, writer = await asyncio.open_connection(hostname, int(port))
        try:
            for mode, method, endpoint, body, store in todo:
                path = f"/queue/local/{APP}{endpoint}" if mode == "queue" else f"/local/{APP}{endpoint}"
                status, _ = await _exchange(reader, writer, host, method, path, body, {} if store else _NO_STORE)
                if mode == "queue" and status != 200:
                    errors.append(f"{method} {path}: {status}")
        finally:
            writer.close()

    await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(connections))), timeout)
    if errors:
        raise SystemExit(f"{len(errors)} queue submissions failed, first: {errors[0]}")
    deadline = time.monotonic() + timeout
    while True:
        unfinished = queue_unfinished(base)
        kept = _get(base, "/_falemu/api/overview")["requests_kept"]
        if not unfinished and kept >= count:
            return time.perf_counter() - started
        if time.monotonic() > deadline:
            raise SystemExit(f"{base}: the history did not reach {count} finished requests")
        await asyncio.sleep(0.2)


_NO_STORE = {"X-Fal-Store-IO": "0"}


# -- first page in Chromium -----------------------------------------------------------------------------------

# Marks window.__shown with performance.now() at the first frame painted after ready() holds.
READY_SCRIPT = """
(() => {
  const expected = %(expected)s[location.port];
  const ready = {
    overview: () => document.querySelector(".card[data-app]")
      && document.querySelector("table.runners tr[data-runner]"),
    requests: () => {
      const table = document.querySelector("table.requests[data-page-size]");
      const line = [...document.querySelectorAll(".toolbar .muted")]
        .some((e) => e.textContent.endsWith(` of ${expected} kept`));
      const rows = table ? table.querySelectorAll("tr[data-request]").length : 0;
      return line && rows === Math.min(expected, +table.dataset.pageSize);
    },
  };
  const which = location.hash.startsWith("#/requests") ? "requests" : "overview";
  const check = () => {
    if (window.__ready === undefined && ready[which]()) {
      window.__ready = performance.now();
      observer.disconnect();
      requestAnimationFrame(() => setTimeout(() => { window.__shown = performance.now(); }, 0));
    }
  };
  const observer = new MutationObserver(check);
  observer.observe(document, { childList: true, subtree: true, characterData: true });
})();
"""


def page_loads(browser: Any, url: str, expected: dict[int, int], timeout: float = 30.0) -> tuple[float, float]:
    """One load of ``url`` in a fresh context: (ms to the content in the DOM, ms to its first paint)."""
    script = READY_SCRIPT % {"expected": json.dumps({str(k): v for k, v in expected.items()})}
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    try:
        context.add_init_script(script)
        page = context.new_page()
        page.goto(url, wait_until="commit", timeout=timeout * 1000)
        try:
            page.wait_for_function("() => window.__shown !== undefined", timeout=timeout * 1000, polling=50)
        except Exception:
            text = page.evaluate("() => document.body.innerText.slice(0, 600)")
            raise SystemExit(f"{url} did not show its content in {timeout:g} s; the page says:\n{text}") from None
        ready, shown = page.evaluate("() => [window.__ready, window.__shown]")
        return float(ready), float(shown)
    finally:
        context.close()


def run_pages(args: argparse.Namespace, runner_port: int, home: Path, env: dict[str, str]) -> list[str]:
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        raise SystemExit(f"{CHROMIUM} is missing: apt-get install chromium")
    started: list[Gateway] = []
    rows: list[str] = []
    try:
        full = Gateway(runner_port, True, home / "full", env, started)
        base = Gateway(runner_port, True, home / "base", env, started)
        took = asyncio.run(fill(full.url, args.requests))
        print(f"filled: {args.requests} requests in {took:.1f} s ({args.requests / took:.0f} req/s)", flush=True)
        asyncio.run(fill(base.url, BASELINE_REQUESTS))
        kept = {g.port: int(_get(g.url, "/_falemu/api/overview")["requests_kept"]) for g in (full, base)}
        print(f"history: {kept[full.port]} requests kept (baseline {kept[base.port]})", flush=True)
        times: dict[tuple[str, str], list[tuple[float, float]]] = {}
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            try:
                for target in (full, base):  # warm up: the server's code paths and Chromium's start
                    page_loads(browser, target.url + "/", kept)
                for _ in range(args.loads):
                    for view, path in (("/", "/"), ("Requests", "/#/requests")):
                        for name, target in (("full", full), ("base", base)):
                            times.setdefault((view, name), []).append(page_loads(browser, target.url + path, kept))
            finally:
                browser.close()
        print(f"\n{'page':<10} {'history':>9} {'content ms':>11} {'painted ms':>11}   (median of {args.loads} loads)")
        for view in ("/", "Requests"):
            for name, target in (("full", full), ("base", base)):
                loads = times[(view, name)]
                ready = statistics.median(t[0] for t in loads)
                shown = statistics.median(t[1] for t in loads)
                print(f"{view:<10} {kept[target.port]:>9} {ready:>11.0f} {shown:>11.0f}")
            full_shown = statistics.median(t[1] for t in times[(view, "full")])
            base_shown = statistics.median(t[1] for t in times[(view, "base")])
            rows.append(
                f"{view} with {kept[full.port]} requests: painted in {full_shown:.0f} ms "
                f"({BASELINE_REQUESTS} requests: {base_shown:.0f} ms); target < 1000 ms: {_ok(full_shown < 1000)}"
            )
    finally:
        for gateway in started:
            gateway.stop()
    return rows


def _get(base: str, path: str) -> Any:
    import httpx

    return httpx.get(base + path, timeout=30).json()


# -- CPU per forwarded request -------------------------------------------------------------------------------


def run_wrk(url: str, connections: int, seconds: float, script: Path) -> tuple[int, float, float]:
    """(requests, req/s, p50 ms) of one wrk round POSTing the small JSON body."""
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency", "-s", str(script), url]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=seconds + 30).stdout
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    done = re.search(r"(\d+) requests in", out)
    if not match or not done or "Non-2xx" in out or "Socket errors" in out:
        raise SystemExit(f"wrk run failed or saw errors:\n{out}")
    return int(done.group(1)), float(match.group(1)), _wrk_value(out, "50%")


def cpu_round(gateway: Gateway, mode: str, args: argparse.Namespace, script: Path) -> tuple[float, float]:
    """(gateway CPU µs per request, req/s) of one round; a queue round includes running its queue dry."""
    path = f"/queue/local/{APP}/fast" if mode == "queue" else f"/local/{APP}/fast"
    before = cpu_seconds(gateway.pid)
    requests, rps, _ = run_wrk(gateway.url + path, args.connections, args.seconds, script)
    if mode == "queue":
        wait_queue_dry(gateway.url)
    after = cpu_seconds(gateway.pid)
    return (after - before) * 1e6 / requests, rps


def run_cpu(args: argparse.Namespace, runner_port: int, home: Path, env: dict[str, str]) -> list[str]:
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is missing: apt-get install wrk")
    script = home / "post.lua"
    script.write_text(
        f"wrk.method = 'POST'\nwrk.body = '{SMALL_BODY}'\nwrk.headers['Content-Type'] = 'application/json'\n"
    )
    started: list[Gateway] = []
    verdicts: list[str] = []
    try:
        on = Gateway(runner_port, True, home / "on", env, started)
        off = Gateway(runner_port, False, home / "off", env, started)
        for gateway in (on, off):  # warm up connections and code paths
            for mode in ("sync", "queue"):
                cpu_round(gateway, mode, argparse.Namespace(connections=4, seconds=1), script)
        print(
            f"\n{'mode':<6} {'dashboard':<9} {'gateway CPU us/req':>19} {'req/s':>8}   (median of {args.rounds} rounds)"
        )
        for mode in ("sync", "queue"):
            results: dict[str, list[tuple[float, float]]] = {"on": [], "off": []}
            for i in range(args.rounds):
                order = ((on, "on"), (off, "off")) if i % 2 == 0 else ((off, "off"), (on, "on"))
                for gateway, name in order:
                    results[name].append(cpu_round(gateway, mode, args, script))
            med = {name: statistics.median(r[0] for r in runs) for name, runs in results.items()}
            for name in ("off", "on"):
                rps = statistics.median(r[1] for r in results[name])
                spread = ", ".join(f"{r[0]:.0f}" for r in results[name])
                print(f"{mode:<6} {name:<9} {med[name]:>19.1f} {rps:>8.0f}   ({spread})")
            # each on round against the off round next to it: slow drifts of the machine cancel out
            ratio = statistics.median(a[0] / b[0] for a, b in zip(results["on"], results["off"], strict=True))
            verdicts.append(
                f"{mode}: recording costs {med['on'] - med['off']:+.1f} us per request; on/off {ratio:.3f} "
                f"(median of the rounds' ratios; target <= 1.10: {_ok(ratio <= 1.10)})"
            )
        kept = _get(on.url, "/_falemu/api/overview")["requests_kept"]
        print(f"(the recording gateway's history held {kept} requests at the end)")
    finally:
        for gateway in started:
            gateway.stop()
    return verdicts


# -- the run -------------------------------------------------------------------------------------------------


def _ok(passed: bool) -> str:
    return "met" if passed else "NOT met"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=10_000, help="requests in the full history")
    parser.add_argument("--loads", type=int, default=9, help="page loads per page and history (median shown)")
    parser.add_argument("--rounds", type=int, default=25, help="CPU rounds per mode and setting (median shown)")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each CPU round")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections in the CPU rounds")
    parser.add_argument("--only", nargs="*", choices=("page", "cpu"), help="run only these parts")
    parser.add_argument("--serve-gateway", nargs=2, metavar=("PORT", "RUNNER_PORT"), help=argparse.SUPPRESS)
    parser.add_argument("--dashboard", choices=("on", "off"), default="on", help=argparse.SUPPRESS)
    parser.add_argument("--home", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_gateway:
        port, runner_port = (int(x) for x in args.serve_gateway)
        serve_gateway(port, runner_port, args.dashboard == "on", Path(args.home))
        return 0

    parts = args.only or ["page", "cpu"]
    home = Path(tempfile.mkdtemp(prefix="falemu-bench-dashboard-"))
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "XDG_CONFIG_HOME": str(home / "config"),
        "XDG_CACHE_HOME": str(home / "cache"),
        "XDG_RUNTIME_DIR": str(home / "run"),
    }
    runner_port = free_port()
    quiet = ["--log-level", "warning", "--no-access-log", "--no-server-header", "--no-date-header"]
    runner = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "falemu.gateway.probe:app", "--port", str(runner_port), *quiet],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
    )
    verdicts: list[str] = []
    try:
        wait_port(runner_port)
        print(f"{os.cpu_count()} CPUs; load average before: {_load()} (other work skews both sides alike)")
        if "page" in parts:
            verdicts += run_pages(args, runner_port, home, env)
        if "cpu" in parts:
            verdicts += run_cpu(args, runner_port, home, env)
        print(f"load average after: {_load()}\n")
        for line in verdicts:
            print(line)
    finally:
        stop_process(runner)
        shutil.rmtree(home, ignore_errors=True)
    return 0


def _load() -> str:
    return ", ".join(f"{x:.1f}" for x in os.getloadavg())


if __name__ == "__main__":
    sys.exit(main())
