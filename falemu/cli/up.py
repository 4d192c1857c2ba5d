"""``falemu up [APP ...]``: build, start runners and serve the gateway until Ctrl-C or SIGTERM."""

from __future__ import annotations

import shlex
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import click

from falemu.cli.options import NO_APPS_HINT, examples, gpu_option, load_for, project_option, runtime_option

if TYPE_CHECKING:
    from falemu.emulator import Emulator


def check_port_free(host: str, port: int) -> None:
    """Fail before any image is built when the gateway port is taken (the gateway binds it after the builds)."""
    import socket

    from falemu.errors import UsageError

    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise UsageError(
                f"cannot listen on {host}:{port}: {exc.strerror or exc}",
                hint="another falemu up may be running (see `falemu ps`); pick another port with --port, or --port 0",
            ) from None


TLS_NOT_NEEDED = "the tls setting is no longer needed: the gateway answers HTTP and HTTPS on the same port"


def ready_text(base_url: str, app_ids: list[str], files: str | None = None) -> str:
    """The lines ``falemu up`` prints once everything serves: where it is and how to call it."""
    example = app_ids[0] if app_ids else "<owner>/<app>"
    lines = [
        f"gateway at {base_url} (HTTPS on the same port); `falemu ps` and `falemu logs -f` from another terminal",
        f'fal_client: run `eval "$(falemu env)"`, then fal_client.run("{example}/<path>", arguments={{...}})',
    ]
    if files:
        lines.append(files)
    lines.append("press Ctrl-C to stop")
    return "\n".join(lines)


def files_text(emulator: Emulator) -> tuple[str | None, dict[str, str]]:
    """The local CDN's line of the ready text, and its fields for ``--json``."""
    cdn = emulator.cdn
    if cdn is None:
        return None, {}
    url = f"{cdn.files_base}/_falemu/cdn/files/"
    folder = str(cdn.storage.store.root)
    return f"files (local CDN) at {url}..., kept in {folder}", {"files_url": url, "files_dir": folder}


def start_watching(emulator: Emulator, renderer: Any) -> Any:
    """Start ``--watch``'s loop (falemu.devloop) and say what it watches."""
    from falemu.devloop.loop import DevLoop
    from falemu.devloop.rollout import strategy_of

    devloop = DevLoop(emulator).start()
    strategies = ", ".join(f"{name} {strategy_of(emulator.configs[name])}" for name in emulator.apps)
    renderer.status(
        "Watching",
        f"watching {', '.join(devloop.roots)}: a saved change builds a new revision and rolls it out "
        f"(deployment_strategy: {strategies})",
        roots=devloop.roots,
    )
    return devloop


EXAMPLES = examples(
    ("falemu up", "every app of the pyproject around this folder"),
    ("falemu up greeter --port 0", "one app, on a free port"),
    ('eval "$(falemu env)"', "then, in another shell: fal_client reaches the running falemu up"),
    ("falemu up --watch", "rebuild and roll out a new revision on every saved change"),
    ("falemu up app.py::MyApp", "a fal.App class, as `fal run app.py::MyApp` loads it"),
    ("falemu up --json | jq .", "events as JSON lines, for scripts"),
)


@click.command("up", epilog=EXAMPLES)
@click.argument("apps", nargs=-1)
@project_option
@click.option("--owner", default=None, help="The owner part of app URLs (default: local).")
@click.option("--host", default=None, help="Address the gateway listens on (default: 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Gateway port (default: 8787; 0 picks a free one).")
@runtime_option
@gpu_option
@click.option(
    "--machine-limits/--no-machine-limits",
    default=None,
    help="Give each runner the CPU and memory of its fal machine_type.",
)
@click.option(
    "--cmd",
    "command",
    default=None,
    help="Command that starts the server with --runtime process (default: image.cmd, else the Dockerfile's CMD).",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Host folder mounted at /data in every runner (default: falemu's cache folder).",
)
@click.option(
    "--tls/--no-tls",
    default=None,
    help="No longer needed: HTTP and HTTPS (falemu's local CA) are served on the same port.",
)
@click.option(
    "--verbose", "-v", is_flag=True, help="Show build output, every request's lines (no summaries) and state flips."
)
@click.option(
    "--watch",
    is_flag=True,
    help="Watch each app's build context; on a change, rebuild (layer cache) and roll the new revision out "
    "by the app's deployment_strategy (rolling: no request lost; recreate: old runners stop first).",
)
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
    watch: bool,
    json_lines: bool,
) -> None:
    """Serve the apps of the pyproject (all of them when none is named) at fal-shaped URLs.

    APP is an app name of the pyproject or, as for `fal run`, a fal.App ref: path/to/app.py::ClassName.

    Parses [tool.fal.apps.<name>] as `fal deploy` does, builds each image, starts min_concurrency runners
    (one when it is 0, to prove the app starts), and serves the sync and queue APIs. Runners then scale
    with traffic and stop keep_alive seconds after their last request. Ctrl-C stops everything.
    """
    from falemu.cli.output import Renderer
    from falemu.config import project_settings
    from falemu.emulator import Emulator
    from falemu.errors import ConfigError
    from falemu.events import EventBus

    loaded = load_for(project, apps)
    if not apps and not loaded.app_names:
        raise ConfigError(f"{loaded.pyproject} declares no [tool.fal.apps.<name>] table", hint=NO_APPS_HINT)
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
    check_port_free(settings.host, settings.port)
    renderer = Renderer(json_lines=json_lines, verbose=verbose)
    if settings.sources.get("tls", "default") != "default":  # accepted, so older scripts keep working
        renderer.note(f"note: {TLS_NOT_NEEDED}")
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
        durable_queue=True,
        openapi_at_start=True,
    )

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        renderer.stopping()  # at once: what the cleanup prints next is then read as part of stopping
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_signal)
    # Also when started in the background of a script, where SIGINT starts out ignored.
    previous_sigint = signal.signal(signal.SIGINT, on_signal)
    state_path: Path | None = None
    devloop: Any = None
    try:
        emulator.start()
        for name in emulator.apps:
            document = emulator.started_openapi(name)
            paths = sorted(document["paths"]) if document is not None else None
            config = emulator.configs[name]
            renderer.serving(
                app=name if config.fal_app is None or name != config.name or config.raw else f"{config.alias} ({name})",
                url=emulator.app_url(name),
                queue_url=emulator.queue_url(name),
                auth=config.effective_auth,
                endpoints=paths,
                runners=[{"id": r.id, "url": r.url, "state": r.state} for r in emulator.runners(name)],
            )
        from falemu import state

        state_path = state.register(emulator)
        app_ids = [urlsplit(emulator.app_url(name)).path.strip("/") for name in emulator.apps]
        files, files_fields = files_text(emulator)
        if watch:
            devloop = start_watching(emulator, renderer)
        from falemu import prelaunch

        socket_dir = emulator.cdn.socket_dir if emulator.cdn is not None else None
        prelaunch.ready([emulator.configs[name] for name in emulator.apps], socket_dir)
        renderer.status(
            "Ready",
            ready_text(emulator.base_url, app_ids, files),
            url=emulator.base_url,
            **files_fields,
        )
        emulator.warm_up()  # the dashboard's API, now that the apps serve
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        renderer.stopping()
    finally:
        # A second Ctrl-C must not cut the cleanup short: runners would be left behind.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            if devloop is not None:
                devloop.stop()
            emulator.stop()
        finally:
            signal.signal(signal.SIGINT, previous_sigint)
            if state_path is not None:
                from falemu import state

                state.unregister(state_path)
            signal.signal(signal.SIGTERM, previous)
    renderer.status("Stopped", "stopped: every runner of this falemu up is gone")
    renderer.flush()
