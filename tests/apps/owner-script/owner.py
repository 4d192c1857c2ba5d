"""A stand-in falemu process: starts one runner of an image, prints READY <container id>, blocks.

Usage: python owner.py <image> <app alias> <data dir> <mode>
mode "exit-cleanup" installs falemu's exit cleanup (atexit + SIGTERM); "plain" does not.
"""

from __future__ import annotations

import signal
import socket
import sys
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
    # Block until a signal, whichever thread the kernel hands it to: a main thread waiting on a lock
    # or in sleep() is woken only by signals delivered to it, and the runtime's log follower is a
    # second thread. The handler writes to the wakeup fd from any thread; Python then runs the
    # handler (KeyboardInterrupt, or falemu's SystemExit for SIGTERM) in this thread.
    # Ctrl-C as `falemu up` takes it, also when started from a shell that ignores SIGINT for
    # background jobs (CI scripts): an ignored disposition is inherited, and Python keeps it.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    wake_r, wake_w = socket.socketpair()
    wake_w.setblocking(False)
    signal.set_wakeup_fd(wake_w.fileno())
    print("READY", getattr(handle, "id", ""), flush=True)
    while True:
        wake_r.recv(1)


if __name__ == "__main__":
    main()
