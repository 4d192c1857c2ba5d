"""A stand-in falemu process: starts one runner of an image, prints READY <container id>, blocks.

Usage: python owner.py <image> <app alias> <data dir> <mode>
mode "exit-cleanup" installs falemu's exit cleanup (atexit + SIGTERM); "plain" does not.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

from falemu.config.model import AppConfig, AppShape, ImageConfig
from falemu.runtime.base import PreparedApp, RunnerSpec
from falemu.runtime.docker import DockerRuntime


def main() -> None:
    image, alias, data_dir, mode = sys.argv[1:5]
    app = AppConfig(
        name=alias,
        alias=alias,
        shape=AppShape.DIRECT_SERVER,
        project_root=Path(data_dir),
        image=ImageConfig(image=image),
        exposed_port=8000,
    )
    runtime = DockerRuntime(reap=False, exit_cleanup=mode == "exit-cleanup")
    runner = runtime.start(RunnerSpec(PreparedApp(app, image, built=False), "r1", "local", Path(data_dir)))
    handle = runner.handle
    print("READY", getattr(handle, "id", ""), flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
