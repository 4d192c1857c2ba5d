"""Queue under load: 1000 queued requests with max_concurrency=4 all complete, none lost or run twice.

    python bench/queue_load.py [--requests 1000] [--max-concurrency 4] [--sleep 0] [--base-image IMAGE]

Submits every request to the queue API of ``tests/apps/slow`` (``POST /queue/<owner>/<app>/record``) at
once, waits for the last one to be COMPLETED (the wall time is measured to there), then checks that every
request is COMPLETED and its result is right.  The runners count on their side: each
execution appends the request's ``x-fal-request-id`` to ``/data/<run>/<runner>.log`` (``/data`` is the
shared data folder), so a lost request is an id missing from those files and a request run twice is an
id found twice. Also reports the wall time, the throughput and the most runners alive at once, which
must not exceed max_concurrency, how long the submits took, and this process's CPU time per request
(the caller, the gateway and its queue store share it): on a busy machine the wall times swing, the CPU
per request much less.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import dataclasses
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def thread_cpu() -> dict[str, float]:
    """CPU seconds of this process's threads by role: the caller (main thread), the gateway's event
    loop, the queue store's writer, and everything else (log followers, executors); from /proc."""
    import threading

    roles = {"MainThread": "caller", "falemu-gateway": "gateway", "falemu-queue-store": "store"}
    totals: dict[str, float] = collections.defaultdict(float)
    for thread in threading.enumerate():
        try:
            fields = Path(f"/proc/self/task/{thread.native_id}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        totals[roles.get(thread.name, "other")] += (int(fields[11]) + int(fields[12])) / TICKS
    return totals


SLOW = ROOT / "tests" / "apps" / "slow"


async def drive(
    base: str, run: str, args: argparse.Namespace
) -> tuple[dict[str, dict[str, Any]], list[str], float, float]:
    import httpx

    limits = httpx.Limits(max_connections=args.connections, max_keepalive_connections=args.connections)
    gate = asyncio.Semaphore(args.connections)
    errors: list[str] = []
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:

        async def submit(i: int) -> dict[str, Any] | None:
            async with gate:
                r = await client.post(f"{base}/record", params={"run": run, "seconds": args.sleep}, json={"i": i})
            if r.status_code not in (200, 202):
                errors.append(f"submit {i}: {r.status_code} {r.text[:200]}")
                return None
            data: dict[str, Any] = r.json()
            return data

        started = time.perf_counter()
        submitted = [s for s in await asyncio.gather(*(submit(i) for i in range(args.requests))) if s is not None]
        submitting = time.perf_counter() - started
        pending = {s["request_id"]: s for s in submitted}
        done: dict[str, dict[str, Any]] = {}
        deadline = time.monotonic() + args.timeout

        async def status(rid: str) -> None:
            async with gate:
                r = await client.get(pending[rid]["status_url"])
            if r.status_code == 200 and r.json().get("status") == "COMPLETED":
                done[rid] = pending[rid]

        # The queue is FIFO: wait for the last submitted request first, so polling does not load the
        # gateway (and this process) while the runners work; then check every request.
        last = submitted[-1]["request_id"] if submitted else None
        while last is not None and last not in done and time.monotonic() < deadline:
            await status(last)
            if last not in done:
                await asyncio.sleep(0.05)
        elapsed = time.perf_counter() - started
        while pending and time.monotonic() < deadline:
            await asyncio.gather(*(status(rid) for rid in list(pending)))
            for rid in done:
                pending.pop(rid, None)
            if pending:
                await asyncio.sleep(args.poll)
        errors.extend(f"{rid}: not COMPLETED after {args.timeout:g} s" for rid in pending)

        results: dict[str, dict[str, Any]] = {}

        async def result(rid: str) -> None:
            async with gate:
                r = await client.get(done[rid]["response_url"])
            if r.status_code != 200:
                errors.append(f"{rid}: result {r.status_code} {r.text[:200]}")
                return
            results[rid] = r.json()

        await asyncio.gather(*(result(rid) for rid in list(done)))
    return results, errors, elapsed, submitting


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--max-concurrency", type=int, default=4)
    parser.add_argument("--sleep", type=float, default=0.0, help="seconds each request sleeps on the runner")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--poll", type=float, default=1.0, help="seconds between rounds of status polls")
    parser.add_argument("--base-image", default=os.environ.get("FALEMU_TEST_BASE_IMAGE", "falemu-base:bookworm"))
    args = parser.parse_args()
    os.environ.setdefault("FALEMU_BUILD_ARG_BASE_IMAGE", args.base_image)

    from falemu.config import get_app, load_project
    from falemu.config.model import Project
    from falemu.config.settings import Settings
    from falemu.emulator import Emulator
    from falemu.events import Event, RunnerStateChanged

    home = Path(tempfile.mkdtemp(prefix="falemu-bench-queue-"))
    os.environ.setdefault("XDG_CONFIG_HOME", str(home / "config"))
    data = home / "data"
    loaded = load_project(SLOW)
    app = dataclasses.replace(get_app(loaded, "slowpoke"), alias=f"bench-queue-{os.getpid()}")
    project = Project(root=loaded.root, pyproject=loaded.pyproject, apps={"slowpoke": app})
    settings = Settings(port=0, data_dir=data, runtime="docker")
    overrides = {"slowpoke": {"max_concurrency": args.max_concurrency, "keep_alive": 30, "max_multiplexing": 1}}

    live: set[str] = set()
    peak = 0

    def watch(event: Event) -> None:
        nonlocal peak
        if isinstance(event, RunnerStateChanged):
            if event.state in ("TERMINATED", "FAILURE_DELAY"):
                live.discard(event.runner)
            else:
                live.add(event.runner)
            peak = max(peak, len(live))

    run = uuid.uuid4().hex
    try:
        with Emulator(project, settings, overrides=overrides) as emu:
            emu.events.subscribe(watch)
            cpu, threads = time.process_time(), thread_cpu()
            results, errors, elapsed, submitting = asyncio.run(drive(emu.queue_url("slowpoke"), run, args))
            cpu, after = time.process_time() - cpu, thread_cpu()
            by_role = {role: after[role] - threads.get(role, 0.0) for role in after}
            stats = emu.controller("slowpoke").stats
        executions: collections.Counter[str] = collections.Counter()
        per_runner: dict[str, int] = {}
        for log in sorted((data / run).glob("*.log")):
            ids = [line for line in log.read_text().splitlines() if line]
            per_runner[log.stem] = len(ids)
            executions.update(ids)
    finally:
        shutil.rmtree(home, ignore_errors=True)

    mismatched = [rid for rid, body in results.items() if body.get("request_id") != rid]
    lost = [rid for rid in results if executions[rid] == 0]
    twice = [rid for rid, n in executions.items() if n > 1]
    unknown = [rid for rid in executions if rid not in results]
    print(
        f"{args.requests} queued requests, max_concurrency={args.max_concurrency}: {len(results)} completed in "
        f"{elapsed:.2f} s ({len(results) / elapsed:.0f} req/s)"
    )
    print(
        f"submits: {args.requests} in {submitting:.2f} s ({args.requests / submitting:.0f}/s); "
        f"CPU of this process {cpu * 1e6 / max(1, args.requests):.0f} µs per request ("
        + ", ".join(f"{role} {secs * 1e6 / max(1, args.requests):.0f}" for role, secs in sorted(by_role.items()))
        + ")"
    )
    print(f"runners: peak {peak} alive at once, {stats.starts} started, {stats.cold_starts} cold starts")
    print("executions per runner: " + ", ".join(f"{r} {n}" for r, n in sorted(per_runner.items())))
    print(
        f"lost {len(lost)}, run twice {len(twice)}, unknown ids {len(unknown)}, wrong result {len(mismatched)}, "
        f"errors {len(errors)}"
    )
    for line in errors[:10]:
        print("  " + line)
    ok = (
        len(results) == args.requests
        and not (lost or twice or unknown or mismatched or errors)
        and peak <= args.max_concurrency
    )
    print("ok" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
