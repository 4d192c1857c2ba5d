"""``falemu up [APP ...]``: build, start runners and serve the gateway until Ctrl-C or SIGTERM."""

from __future__ import annotations

import shlex
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import click

from falemu.cli.options import project_option


@click.command("up")
@click.argument("apps", nargs=-1)
@project_option
@click.option("--owner", default=None, help="The owner part of app URLs (default: local).")
@click.option("--host", default=None, help="Address the gateway listens on (default: 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Gateway port (default: 8787; 0 picks a free one).")
@click.option(
    "--runtime",
    "runtime_name",
    type=click.Choice(["auto", "docker", "process"]),
    default=None,
    help="Run runners as containers (docker) or host processes (process); auto uses Docker when it answers.",
)
@click.option("--gpu", type=click.Choice(["auto", "require", "off"]), default=None, help="GPU passthrough.")
@click.option(
    "--machine-limits/--no-machine-limits",
    default=None,
    help="Give each runner the CPU and memory of its fal machine_type.",
)
@click.option("--cmd", "command", default=None, help="Command that starts the server (process runtime).")
@click.option(
    "--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None, help="Host folder for /data."
)
@click.option("--tls/--no-tls", default=None, help="Serve HTTPS with a certificate from falemu's local CA.")
@click.option("--verbose", "-v", is_flag=True, help="Show build output.")
@click.option("--json", "json_lines", is_flag=True, help="Print events as JSON lines.")
def up(
    apps: tuple[str, ...],
    project: Path | None,
    owner: str | None,
    host: str | None,
    port: int | None,
    runtime_name: str | None,
    gpu: str | None,
    machine_limits: bool | None,
    command: str | None,
    data_dir: Path | None,
    tls: bool | None,
    verbose: bool,
    json_lines: bool,
) -> None:
    """Serve the apps of the pyproject (all of them when none is named) at fal-shaped URLs.

    Parses [tool.fal.apps.<name>] as `fal deploy` does, builds each image, starts min_concurrency runners
    (one when it is 0, to prove the app starts), and serves the sync and queue APIs. Runners then scale
    with traffic and stop keep_alive seconds after their last request. Ctrl-C stops everything.
    """
    from falemu import state
    from falemu.cli.output import Renderer
    from falemu.config import load_project, project_settings
    from falemu.emulator import Emulator
    from falemu.events import EventBus

    loaded = load_project(project)
    cli: dict[str, Any] = {
        "owner": owner,
        "host": host,
        "port": port,
        "runtime": runtime_name,
        "gpu": gpu,
        "machine_limits": machine_limits,
        "data_dir": data_dir,
        "tls": tls,
    }
    settings = project_settings(loaded, cli={k: v for k, v in cli.items() if v is not None})
    renderer = Renderer(json_lines=json_lines, verbose=verbose)
    events = EventBus()
    events.subscribe(renderer)
    emulator = Emulator(
        loaded,
        settings,
        apps=list(apps) or None,
        events=events,
        verbose=verbose,
        warm=True,
        command=shlex.split(command) if command else None,
    )

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_signal)
    # Also when started in the background of a script, where SIGINT starts out ignored.
    previous_sigint = signal.signal(signal.SIGINT, on_signal)
    state_path: Path | None = None
    try:
        emulator.start()
        for name in emulator.apps:
            document = emulator.openapi(name)
            paths = sorted(document["paths"]) if document is not None else None
            config = emulator.configs[name]
            renderer.serving(
                app=name,
                url=emulator.app_url(name),
                queue_url=emulator.queue_url(name),
                auth=config.effective_auth,
                endpoints=paths,
                runners=[{"id": r.id, "url": r.url, "state": r.state} for r in emulator.runners(name)],
            )
        verify: str | bool = True
        if settings.tls:
            from falemu.gateway.tls import client_bundle

            verify = client_bundle()
        state_path = state.register(emulator, verify=verify)
        renderer.status(
            "Ready",
            f"gateway at {emulator.base_url}; `falemu ps` and `falemu logs -f` from another terminal\n"
            "press Ctrl-C to stop",
            url=emulator.base_url,
        )
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        renderer.status("Stopping", "stopping...")
    finally:
        # A second Ctrl-C must not cut the cleanup short: runners would be left behind.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            emulator.stop()
        finally:
            signal.signal(signal.SIGINT, previous_sigint)
            if state_path is not None:
                state.unregister(state_path)
            signal.signal(signal.SIGTERM, previous)
    renderer.status("Stopped", "stopped: every runner of this falemu up is gone")
