"""keep_alive precision: an idle runner stops within keep_alive + 1 s of its last request, never before.

    python bench/keepalive.py [--trials 5] [--keep-alive 3] [--runtime docker|fake] [--base-image IMAGE]

Each trial sends one request through the gateway (a cold start) and measures, on the real clock, how
long the runner then stays: from the end of its request (the gateway's RequestCompleted event, emitted
once the response is sent and the runner released) until falemu orders it to stop (TERMINATING) and
until it is gone (TERMINATED, after SIGTERM and the app's shutdown). It also shows the same span as the
client sees it, from when its response arrived. The runner must not be stopped before keep_alive
seconds and must be ordered to stop within keep_alive + 1 s.
The docker runtime uses ``tests/apps/slow`` built FROM ``--base-image`` (default ``$FALEMU_TEST_BASE_IMAGE``
or ``falemu-base:bookworm``).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SLOW = ROOT / "tests" / "apps" / "slow"


def build_emulator(args: argparse.Namespace, home: Path) -> Any:
    from falemu.config import get_app, load_project
    from falemu.config.model import Project
    from falemu.config.settings import Settings
    from falemu.emulator import Emulator

    loaded = load_project(SLOW)
    app = dataclasses.replace(get_app(loaded, "slowpoke"), alias=f"bench-keepalive-{os.getpid()}")
    project = Project(root=loaded.root, pyproject=loaded.pyproject, apps={"slowpoke": app})
    settings = Settings(port=0, data_dir=home / "data", runtime="docker")
    runtime = None
    if args.runtime == "fake":
        from falemu.runtime.fake import FakeRuntime

        runtime = FakeRuntime()
    overrides = {"slowpoke": {"keep_alive": args.keep_alive, "termination_grace_period_seconds": 1}}
    return Emulator(project, settings, runtime=runtime, overrides=overrides)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--keep-alive", type=int, default=3)
    parser.add_argument("--runtime", choices=["docker", "fake"], default="docker")
    parser.add_argument("--base-image", default=os.environ.get("FALEMU_TEST_BASE_IMAGE", "falemu-base:bookworm"))
    args = parser.parse_args()
    os.environ.setdefault("FALEMU_BUILD_ARG_BASE_IMAGE", args.base_image)

    import httpx

    from falemu.events import Event, RequestCompleted, RunnerStateChanged

    home = Path(tempfile.mkdtemp(prefix="falemu-bench-keepalive-"))
    os.environ.setdefault("XDG_CONFIG_HOME", str(home / "config"))
    stopping: dict[str, float] = {}
    gone: dict[str, float] = {}
    completed: dict[str, float] = {}
    changed = threading.Condition()

    def watch(event: Event) -> None:
        # Event timestamps are wall-clock (time.time()) on both sides of each span.
        if isinstance(event, RequestCompleted):
            with changed:
                completed[event.runner] = event.ts
        if isinstance(event, RunnerStateChanged) and event.state in ("TERMINATING", "TERMINATED"):
            with changed:
                (stopping if event.state == "TERMINATING" else gone)[event.runner] = event.ts
                changed.notify_all()

    keep_alive = float(args.keep_alive)
    ordered: list[float] = []
    finished: list[float] = []
    client: list[float] = []
    emu = build_emulator(args, home)
    emu.events.subscribe(watch)
    with emu:
        url = emu.app_url("slowpoke")
        for trial in range(1, args.trials + 1):
            response = httpx.post(f"{url}/slow?seconds=0", timeout=120)
            arrived = time.time()
            response.raise_for_status()
            runner = str(response.json().get("runner", ""))
            with changed:
                if not changed.wait_for(lambda r=runner: r in gone, timeout=keep_alive + 60):  # type: ignore[misc]
                    print(f"trial {trial}: runner {runner} did not stop within {keep_alive + 60:g} s")
                    return 1
            ordered.append(stopping[runner] - completed[runner])
            finished.append(gone[runner] - completed[runner])
            client.append(stopping[runner] - arrived)
            print(
                f"trial {trial}: runner {runner} stop ordered {ordered[-1]:.3f} s, gone {finished[-1]:.3f} s "
                f"after its last request ended ({client[-1]:.3f} s after the client got the response; "
                f"keep_alive {keep_alive:g} s)"
            )
    early = [t for t in ordered if t < keep_alive]
    late = [t for t in [*ordered, *client] if t > keep_alive + 1]
    print(
        f"stop ordered: min {min(ordered):.3f} s, median {statistics.median(ordered):.3f} s, max {max(ordered):.3f} s; "
        f"gone: median {statistics.median(finished):.3f} s, max {max(finished):.3f} s"
    )
    print(f"target: every stop in [{keep_alive:g}, {keep_alive + 1:g}] s -> {len(early)} early, {len(late)} late")
    ok = not early and not late
    print("ok" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
