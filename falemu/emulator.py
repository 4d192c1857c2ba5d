"""The Emulator facade: parsed apps + a Runtime + one scaling controller per app + the gateway.

Used by ``falemu up``, the pytest plugin and ``falemu check``::

    from falemu.config import load_project, project_settings
    from falemu.emulator import Emulator

    project = load_project("examples/direct-server")
    with Emulator(project, project_settings(project).with_overrides({"port": 0}, "cli")) as emu:
        httpx.post(emu.app_url("greeter") + "/greet", json={"name": "fal"})

``start()`` parses the apps, prepares (builds) their images in the calling thread, makes the
controllers and begins each app's ``min_concurrency`` runners (at least one with ``warm=True``) at
once, then runs one asyncio event loop in a background thread. In that loop the controllers adopt
those starts, the gateway is built in a worker thread meanwhile (mostly imports, which would
otherwise wait for the runners) and served with uvicorn as soon as it is built, while the runners
still start (a request waits for a runner, as on fal), on ``settings.host:settings.port``, HTTP and
HTTPS with falemu's local CA on that one port (port 0 picks a free one; :attr:`base_url`, always
``http://``, has the real one). ``start()`` returns once the first runners are ready. The
controllers and the gateway share that loop. ``stop()`` stops the server, every runner and the
loop, and leaves no thread, socket or runner behind.

Besides the gateway's routes, the server answers a few admin routes under ``/_falemu/`` (``ps``,
``logs``, ``events``) that ``falemu ps`` and ``falemu logs`` use from another terminal; they need the
``X-Falemu-Admin-Token`` header with :attr:`admin_token`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import secrets
import socket
import threading
from collections.abc import Awaitable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from falemu.clock import Clock, MonotonicClock
from falemu.config.model import AppConfig, Project, ScalingConfig
from falemu.config.settings import Settings
from falemu.errors import FalemuError, UsageError
from falemu.events import EventBus, Notice
from falemu.runtime.base import PreparedApp, RunnerSpec, Runtime
from falemu.scaling.controller import AppController
from falemu.scaling.policy import SERVING_STATES
from falemu.scaling.pool import RunnerInfo, RunnerPool

if TYPE_CHECKING:
    import uvicorn

    from falemu.cdn.service import CdnService
    from falemu.chaos.injector import Chaos
    from falemu.dashboard import Dashboard
    from falemu.devloop.reload import Reloader
    from falemu.gateway.app import Gateway
    from falemu.queue import QueueStore

SCALING_FIELDS = frozenset(f.name for f in dataclasses.fields(ScalingConfig))
STOP_TIMEOUT = 60.0


class Emulator:
    """fal's serverless path for a set of apps of one project (see the module docstring)."""

    def __init__(
        self,
        project: Project,
        settings: Settings,
        *,
        apps: Sequence[str] | None = None,
        runtime: Runtime | None = None,
        clock: Clock | None = None,
        events: EventBus | None = None,
        overrides: Mapping[str, Mapping[str, Any]] | None = None,
        verbose: bool = False,
        warm: bool = False,
        command: Sequence[str] | None = None,
        tick: float = 0.2,
        preloaded: Sequence[AppConfig] | None = None,
        durable_queue: bool = False,
        openapi_at_start: bool = False,
    ) -> None:
        self.project = project
        self.settings = settings
        self.events: EventBus = events if events is not None else EventBus()
        self.clock: Clock = clock or MonotonicClock()
        self.verbose = verbose
        self.warm = warm
        self.admin_token = secrets.token_urlsafe(24)
        self.api_key: str | None = None
        self.base_url = ""
        self.port = 0
        self._names = list(apps) if apps else list(project.app_names)
        self._overrides = {k: dict(v) for k, v in (overrides or {}).items()}
        self._runtime = runtime
        self._own_runtime = runtime is None
        self._command = tuple(command) if command else None
        self._tick = tick
        self.durable_queue = durable_queue
        self.queue_store: QueueStore | None = None
        self.configs: dict[str, AppConfig] = {}
        self._preloaded = {config.name: config for config in preloaded or ()}  # already resolved (falemu check)
        self._cwd = Path.cwd()  # command-line refs are relative to where the emulator was made
        self.prepared: dict[str, PreparedApp] = {}
        self._controllers: dict[str, AppController] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: uvicorn.Server | None = None
        self.gateway: Gateway | None = None  # the gateway, once serving
        self.cdn: CdnService | None = None  # the local CDN (falemu.cdn), once the gateway's port is bound
        self.dashboard: Dashboard | None = None  # the request history and dashboard, once started
        self._main_task: asyncio.Task[None] | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._started = False
        self._stopped = False
        self._runner_env: dict[str, str] = {}  # what every runner gets besides fal's environment (the CDN's)
        self._runner_mounts: dict[str, str] = {}
        self._reloader: Reloader | None = None
        self._reloader_lock = threading.Lock()
        self._chaos: Chaos | None = None
        self._openapi_at_start = openapi_at_start
        self._documents: dict[str, dict[str, Any] | None] = {}  # each app's last /openapi.json

    # -- lifecycle ----------------------------------------------------------------------------------

    def __enter__(self) -> Emulator:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        if self._started:
            return
        self._started = True
        try:
            self._parse()
            if self.settings.dashboard:
                from falemu.dashboard import Dashboard

                self.dashboard = Dashboard.for_emulator(self)
            runtime = self.runtime
            self._fit_to_runtime(runtime)
            for name, config in self.configs.items():
                self.prepared[name] = runtime.prepare(config, self.events, self.verbose)
            self.api_key = self._default_key()
            if self._stopped:
                raise FalemuError("the emulator was stopped while it was starting")
            sock = self._bind()
            try:
                self.cdn = self._bind_cdn(runtime)
                self._head_start(runtime)
                self.queue_store = self._open_queue()
            except BaseException:
                sock.close()
                raise
            self._thread = threading.Thread(target=self._thread_main, args=(sock,), name="falemu-gateway", daemon=True)
            self._thread.start()
            self._ready.wait()
            if self._startup_error is not None:
                raise self._startup_error
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop the gateway, every runner and the loop; safe to call more than once.

        A call cut short (a second Ctrl-C while waiting) is completed by the next call: it waits for
        the loop thread and closes the runtime again, rather than returning at once.
        """
        first = not self._stopped
        self._stopped = True
        loop, server, thread, main = self._loop, self._server, self._thread, self._main_task
        if first and loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                if server is not None:
                    if self.gateway is not None:
                        loop.call_soon_threadsafe(self.gateway.stopping)  # no more queued requests to runners
                    loop.call_soon_threadsafe(setattr, server, "should_exit", True)
                if main is not None and not self._ready.is_set():
                    # Still starting (building or waiting for the first runners): give up on that now.
                    loop.call_soon_threadsafe(main.cancel)
        if thread is not None and thread is not threading.current_thread():
            thread.join(STOP_TIMEOUT)
        if thread is None or not thread.is_alive():
            for controller in self._controllers.values():
                controller.drop_head_starts()  # begun, but the loop that would adopt them never ran
        if self._own_runtime and self._runtime is not None:
            self._runtime.close()
        if self.cdn is not None and (thread is None or not thread.is_alive()):
            self.cdn.close_sockets()
        if self.queue_store is not None and (thread is None or not thread.is_alive()):
            self.queue_store.close()

    @property
    def reloader(self) -> Reloader:
        """falemu.devloop's record and rollouts of each app's revisions (made on first use)."""
        with self._reloader_lock:
            if self._reloader is None:
                from falemu.devloop.reload import Reloader

                self._reloader = Reloader(self)
            return self._reloader

    @property
    def stopping(self) -> bool:
        """True once stop() was called."""
        return self._stopped

    @property
    def runtime(self) -> Runtime:
        if self._runtime is None:
            from falemu.runtime import select_runtime

            self._runtime = select_runtime(self.settings, self.events, exit_cleanup=True)
        return self._runtime

    # -- what callers use ---------------------------------------------------------------------------

    @property
    def apps(self) -> list[str]:
        return list(self._names)

    def app_url(self, app: str) -> str:
        config = self._config(app)
        return f"{self.base_url}/{self.settings.owner}/{config.alias}"

    def queue_url(self, app: str) -> str:
        """The app's queue API; on the same port as the sync API, under ``/queue``.

        fal_client reaches it with ``FAL_QUEUE_RUN_HOST=<host>:<port>/queue``.
        """
        config = self._config(app)
        return f"{self.base_url}/queue/{self.settings.owner}/{config.alias}"

    def pool(self, app: str) -> RunnerPool:
        return self._controller(app)

    def controller(self, app: str) -> AppController:
        return self._controller(app)

    def runners(self, app: str | None = None) -> list[RunnerInfo]:
        names = [app] if app is not None else list(self._controllers)
        return [info for name in names for info in self._controller(name).runners()]

    def expire_idle(self, app: str | None = None) -> None:
        """Stop now the idle runners keep_alive would stop later (above min_concurrency and the buffer)."""
        names = [app] if app is not None else list(self._controllers)
        for name in names:
            self._call(self._controller(name).expire_idle())

    def call(self, coro: Awaitable[Any], timeout: float | None = None) -> Any:
        """Run a coroutine on the emulator's event loop from another thread and return its result."""
        return self._call(coro, timeout)

    def openapi(self, app: str, timeout: float = 5.0) -> dict[str, Any] | None:
        """The app's ``/openapi.json`` from one of its ready runners, or, when none is ready (scaled to zero,
        still starting), the last document a runner gave, as fal keeps an app's document between runners.

        None when no runner ever gave one, or the last runner asked answered without one.
        """
        self._controller(app)  # raises for an app that has not started
        name = self._config(app).name
        if not self._serving_urls(name):
            return self._documents.get(name)
        document = self._runner_openapi(name, timeout)
        self._documents[name] = document
        return document

    def _serving_urls(self, name: str) -> list[str]:
        controller = self._controllers.get(name)
        if controller is None:
            return []
        return [r.url for r in controller.runners() if r.url and r.state in SERVING_STATES]

    def _runner_openapi(self, name: str, timeout: float) -> dict[str, Any] | None:
        import http.client
        import json
        from urllib.parse import urlsplit

        urls = self._serving_urls(name)
        if not urls:
            return None
        where = urlsplit(urls[0])
        if where.scheme != "http" or where.hostname is None:
            return None
        connection = http.client.HTTPConnection(where.hostname, where.port or 80, timeout=timeout)
        try:
            connection.request("GET", f"{where.path.rstrip('/')}/openapi.json")
            response = connection.getresponse()
            body = response.read()
            if response.status != 200:
                return None
            document = json.loads(body)
        except (OSError, http.client.HTTPException, ValueError):
            return None
        finally:
            connection.close()
        return document if isinstance(document, dict) and isinstance(document.get("paths"), dict) else None

    # -- internals ----------------------------------------------------------------------------------

    def _config(self, app: str) -> AppConfig:
        for name, config in self.configs.items():
            if app in (name, config.alias):
                return config
        raise UsageError(f"app {app!r} is not running in this emulator", hint=f"running apps: {', '.join(self._names)}")

    def _controller(self, app: str) -> AppController:
        name = self._config(app).name
        controller = self._controllers.get(name)
        if controller is None:
            raise UsageError(f"app {app!r} has not started", hint="call start() first")
        return controller

    def _call(self, coro: Awaitable[Any], timeout: float | None = None) -> Any:
        loop = self._loop
        if loop is None or loop.is_closed():
            if asyncio.iscoroutine(coro):
                coro.close()
            raise UsageError("the emulator is not running", hint="call start() first")

        async def wrapper() -> Any:
            return await coro

        future: concurrent.futures.Future[Any] = asyncio.run_coroutine_threadsafe(wrapper(), loop)
        return future.result(timeout)

    def _parse(self) -> None:
        from falemu.config.falapp import resolve

        if not self._names:
            raise UsageError(
                f"{self.project.pyproject} declares no [tool.fal.apps.<name>] table",
                hint="add one, see `falemu config --help`",
            )
        for name in self._names:
            # Names of the pyproject, or refs (app.py::Class); fal.Apps are loaded by fal's loader.
            config = self._preloaded.get(name) or resolve(self.project, name, cwd=self._cwd)
            self.configs[name] = self._with_overrides(name, config)
        known = set(self.configs) | {c.alias for c in self.configs.values()}
        unknown = set(self._overrides) - known
        if unknown:
            raise UsageError(
                f"scaling overrides for apps that are not started: {', '.join(sorted(unknown))}",
                hint=f"started apps: {', '.join(self._names)}",
            )

    def _with_overrides(self, name: str, config: AppConfig) -> AppConfig:
        changes = self._overrides.get(name) or self._overrides.get(config.alias) or {}
        bad = set(changes) - SCALING_FIELDS
        if bad:
            raise UsageError(
                f"unknown scaling setting(s) for {name}: {', '.join(sorted(bad))}",
                hint="known: " + ", ".join(sorted(SCALING_FIELDS)),
            )
        for key, value in changes.items():
            if value is None and key == "request_start_timeout":
                continue
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise UsageError(
                    f"scaling setting {key} for {name} must be a number of at least 0, got {value!r}",
                    hint=f"for example {key}={getattr(ScalingConfig(), key) or 1}",
                )
        if changes:
            config = dataclasses.replace(config, scaling=dataclasses.replace(config.scaling, **changes))
        return config

    def reparse(self, app: str) -> AppConfig:
        """The app's config as the pyproject says now (with this emulator's overrides and runtime limits)."""
        from falemu.config import load_project
        from falemu.config.falapp import resolve

        name = self._config(app).name
        project = load_project(self.project.pyproject) if self.project.pyproject.is_file() else self.project
        config = self._with_overrides(name, resolve(project, name, cwd=self._cwd))
        if self.runtime.name == "process" and config.scaling.max_concurrency > 1:
            scaling = config.scaling
            config = dataclasses.replace(
                config,
                scaling=dataclasses.replace(
                    scaling, max_concurrency=1, min_concurrency=min(scaling.min_concurrency, 1)
                ),
            )
        return config

    def reload(self, app: str, changes: Sequence[str] = (), *, since: float | None = None) -> Any:
        """Make a new revision of ``app`` from its files and config as they are now, and roll it out by
        its ``deployment_strategy`` (see :mod:`falemu.devloop.reload`). Blocks until it serves or failed;
        returns a :class:`~falemu.devloop.rollout.RolloutResult`, or None when nothing changed."""
        if self._loop is None or self._stopped:
            raise UsageError("the emulator is not running", hint="call start() first")
        return self.reloader.reload(self._config(app).name, changes, since=since)

    @property
    def chaos(self) -> Chaos:
        """Fault injection (falemu.chaos); use its methods on the emulator's loop (:meth:`call`)."""
        if self._chaos is None:
            from falemu.chaos.injector import Chaos

            self._chaos = Chaos(self)
        return self._chaos

    def fault_rows(self, app: str) -> list[dict[str, Any]]:
        """The app's faults in effect (``falemu ps``); none before the first one."""
        if self._chaos is None:
            return []
        alias = self._config(app).alias
        return [row for row in self._chaos.rows(include_ended=False) if row["app"] == alias]

    def runner_spec(self, app: str, prepared: PreparedApp) -> RunnerSpec:
        """The template every runner of ``app`` starts from, for the image in ``prepared``."""
        return RunnerSpec(
            prepared=prepared,
            runner_id="",
            owner=self.settings.owner,
            data_dir=self.settings.data_dir,
            gpu=self.settings.gpu,
            machine_limits=self.settings.machine_limits,
            command=self._command,
            keep_failed=self.settings.keep_failed,
            env={**self._runner_env, **self._key_env()},
            mounts=self._runner_mounts,
        )

    def _fit_to_runtime(self, runtime: Runtime) -> None:
        """The process runtime binds each app's exposed_port directly: one runner per app at a time."""
        if runtime.name != "process":
            return
        for name, config in list(self.configs.items()):
            scaling = config.scaling
            if scaling.max_concurrency <= 1:
                continue
            self.configs[name] = dataclasses.replace(
                config,
                scaling=dataclasses.replace(
                    scaling, max_concurrency=1, min_concurrency=min(scaling.min_concurrency, 1)
                ),
            )
            self.events(
                Notice(
                    config.alias,
                    level="info",
                    message=f"{name}: the process runtime runs one runner at a time (max_concurrency 1, "
                    f"not {scaling.max_concurrency}); use Docker to scale out",
                )
            )

    def _open_queue(self) -> QueueStore:
        """The project's durable queue (locked to this process), or a throwaway one."""
        from falemu.queue import QueueStore, check_outside, queue_dir

        if not self.durable_queue:
            return QueueStore.ephemeral()
        folder = queue_dir(self.project.root, self.settings.owner)
        check_outside(folder, self.settings.data_dir)
        return QueueStore.open(folder)

    def _key_env(self) -> dict[str, str]:
        """A key of the local user for every runner (fal's runners get the owner's ``FAL_KEY``), so fal's
        SDK and fal_client inside the app authenticate."""
        return {"FAL_KEY": self.api_key} if self.api_key else {}

    def _default_key(self) -> str | None:
        try:
            from falemu.gateway.keys import KeyStore
        except ImportError:  # pragma: no cover - the gateway ships with falemu
            return None
        return KeyStore().default_key()

    def _bind_cdn(self, runtime: Runtime) -> CdnService:
        """The local CDN's store and sockets (see falemu.cdn), next to the gateway's bound port."""
        from falemu.cdn.network import bridge_address
        from falemu.cdn.service import CdnService

        cdn = CdnService(
            self.settings,
            runtime=runtime.name,
            gateway_base=self.base_url,
            bridge=lambda: bridge_address(getattr(runtime, "network", None)),
            notice=lambda message: self.events(Notice("", level="warning", message=message)),
        )
        try:
            return cdn.bind()
        except OSError as exc:
            cdn.close_sockets()
            raise FalemuError(
                f"cannot open the local CDN: {exc.strerror or exc}",
                hint=f"check that {self.settings.files_dir} is writable (files_dir, FALEMU_FILES_DIR)",
            ) from None

    def _bind(self) -> socket.socket:
        host, port = self.settings.host, self.settings.port
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            sock.close()
            raise UsageError(
                f"cannot listen on {host}:{port}: {exc.strerror or exc}",
                hint="another falemu up may be running (see `falemu ps`); pick another port with --port or 0",
            ) from None
        sock.listen(2048)
        sock.setblocking(False)
        self.port = int(sock.getsockname()[1])
        shown = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
        shown = f"[{shown}]" if ":" in shown else shown
        self.base_url = f"http://{shown}:{self.port}"  # HTTPS answers on the same port
        return sock

    def _head_start(self, runtime: Runtime) -> None:
        """Make each app's controller and begin its first runners now (AppController.head_start).

        Their containers then start while the queue store opens and the event loop, the local CDN's
        servers and the gateway get ready: with an unchanged image, what ``falemu up`` waits for is
        the runner's own start-up, not falemu's. The controllers adopt them once the loop runs.
        """
        if self.cdn is not None:  # bound: what runners get is known before its servers start
            self._runner_env, self._runner_mounts = self.cdn.runner_env(), self.cdn.runner_mounts()
        for name, config in self.configs.items():
            spec = self.runner_spec(name, self.prepared[name])
            controller = AppController(config, runtime, spec, clock=self.clock, events=self.events, tick=self._tick)
            self._controllers[name] = controller
            controller.head_start(warm=1 if self.warm else 0)

    def _thread_main(self, sock: socket.socket) -> None:
        try:
            from falemu.gateway.loop import new_event_loop

            loop = new_event_loop()  # uvloop's when installed
        except Exception as exc:  # start() waits for _ready: it must hear of this, not hang
            sock.close()
            self._startup_error = FalemuError(
                f"cannot create the gateway's event loop: {type(exc).__name__}: {exc}",
                hint="reinstall falemu with its dependencies (uvicorn, httptools, uvloop)",
            )
            self._ready.set()
            return
        self._loop = loop
        try:
            asyncio.set_event_loop(loop)
            self._main_task = loop.create_task(self._main(sock), name="falemu-emulator")
            loop.run_until_complete(self._main_task)
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            sock.close()
            loop.close()
            self._ready.set()

    async def _main(self, sock: socket.socket) -> None:
        serving: asyncio.Task[None] | None = None
        try:
            if self._stop_requested():  # stop() came before this task existed, so nothing cancelled it
                raise asyncio.CancelledError
            starting, app = await self._start_runners_and_build()
            if self._stop_requested():
                raise asyncio.CancelledError
            import uvicorn

            from falemu.gateway.listener import GatewayServer
            from falemu.gateway.server import gateway_server_options

            # Served while the first runners start, as fal's URLs answer then: a request waits for a runner.
            server = GatewayServer(uvicorn.Config(app, **gateway_server_options()))
            self._server = server
            serving = asyncio.create_task(server.serve(sockets=[sock]))
            while not server.started and not serving.done():
                await asyncio.sleep(0.005)
            if serving.done():
                serving.result()
                raise FalemuError("the gateway stopped during start-up", hint="run with --debug for details")
            await starting
            if self._openapi_at_start:  # the documents `falemu up` lists, from the first ready runners
                self._documents.update(await asyncio.to_thread(self._fetch_documents))
            self._ready.set()
            if self.cdn is not None:
                self.cdn.sweep_later()
            if self._stop_requested():  # stop() came while the server was starting
                server.should_exit = True
            await serving
        except BaseException as exc:
            if not self._ready.is_set():
                if isinstance(exc, Exception):
                    self._startup_error = exc
                elif isinstance(exc, asyncio.CancelledError):
                    self._startup_error = FalemuError("the emulator was stopped while it was starting")
                else:
                    self._startup_error = FalemuError(str(exc) or type(exc).__name__)
            elif not isinstance(exc, asyncio.CancelledError | SystemExit | KeyboardInterrupt):
                raise
        finally:
            if serving is not None and not serving.done() and self._server is not None:
                self._server.should_exit = True
                await asyncio.wait([serving], timeout=10)
                if not serving.done():
                    serving.cancel()
            await self._shutdown()
            if self.cdn is not None:
                with contextlib.suppress(Exception):
                    await self.cdn.aclose()
            self._ready.set()

    async def _start_runners_and_build(self) -> tuple[asyncio.Future[Any], Gateway]:
        """Start each app's first runners and, meanwhile, the local CDN's servers and the gateway's build.

        The runners' containers take a second or more to become ready, waiting on the engine and on
        their own processes: building the gateway (mostly imports, in a worker thread) and serving the
        CDN's sockets (bound already, so a runner's early connection waits in their backlog) then cost
        the start nothing. Returns the runners' start, still under way, with the built gateway; a
        failure that came before the build ended is raised once it has (the build has nothing to undo).
        """
        starting = asyncio.ensure_future(
            asyncio.gather(*(c.start(warm=1 if self.warm else 0) for c in self._controllers.values()))
        )
        # A few turns of the loop: each controller's start launches its runners' tasks, and each task hands
        # the runtime's start to a thread, before the build (imports, which hold the GIL) begins.
        for _ in range(3):
            await asyncio.sleep(0)
        building = asyncio.ensure_future(asyncio.to_thread(self._asgi_app))
        try:
            if self.cdn is not None:
                await self.cdn.start()
            gateway = await building
            if starting.done():
                starting.result()
        except BaseException:
            if not starting.done():
                starting.cancel()
            futures: list[asyncio.Future[Any]] = [starting, building]
            await asyncio.wait(futures)
            for future in futures:
                if not future.cancelled():
                    future.exception()  # retrieved: the error raised here is the one to report
            raise
        return starting, gateway

    def _fetch_documents(self) -> dict[str, dict[str, Any] | None]:
        """Each app's ``/openapi.json`` from its first ready runner (see :meth:`started_openapi`)."""
        return {name: self._runner_openapi(name, 5.0) for name in self._controllers}

    def warm_up(self) -> None:
        """Build, in a thread, what is otherwise built on first use (the dashboard's JSON API)."""
        if self.dashboard is not None:
            self.dashboard.warm()

    def started_openapi(self, app: str) -> dict[str, Any] | None:
        """The document :meth:`openapi` gave while the emulator started (with ``openapi_at_start``), or a
        fresh one when it gave none."""
        name = self._config(app).name
        document = self._documents.get(name)
        return document if document is not None else self.openapi(app)

    def _stop_requested(self) -> bool:
        return self._stopped  # set by stop() from another thread

    async def _shutdown(self) -> None:
        if self.dashboard is not None:
            with contextlib.suppress(Exception):
                await self.dashboard.aclose()
        controllers = list(self._controllers.values())
        await asyncio.gather(*(c.close(wait_starts=0.5) for c in controllers), return_exceptions=True)
        if self._own_runtime and self._runtime is not None:
            # Kills runners whose start is still in progress, so their start threads end too.
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self._runtime.close)
        for controller in controllers:
            with contextlib.suppress(Exception):
                await controller.settle(timeout=30)

    def _asgi_app(self) -> Gateway:
        from falemu.state import ADMIN_ROUTES, admin_app

        gateway = self._gateway_app()
        admin = admin_app(self)
        for route in ADMIN_ROUTES:
            gateway.mount(route, admin, exact=True)
            gateway.mount(route + "/", admin, exact=True)
        from falemu.chaos.admin import ROUTE as CHAOS_ROUTE
        from falemu.chaos.admin import chaos_app

        chaos = chaos_app(self)
        gateway.mount(CHAOS_ROUTE, chaos, exact=True)
        gateway.mount(CHAOS_ROUTE + "/", chaos)
        if self.cdn is not None:
            self.cdn.mount_on(gateway)
        self._mount_js_proxy(gateway)
        if self.dashboard is not None:
            self.dashboard.mount(gateway)
        self.gateway = gateway
        return gateway

    def _mount_js_proxy(self, gateway: Gateway) -> None:
        """``/api/fal/proxy`` (falemu.jsproxy): fal's hosts answered by the gateway and the local CDN."""
        from falemu.jsproxy import PROXY_ROUTE, JsProxy

        targets: dict[str, Any] = {"fal.run": gateway, "queue.fal.run": gateway}
        if self.cdn is not None:
            targets["rest.fal.ai"] = self.cdn.rest_app()
        proxy = JsProxy(targets, api_key=lambda: self.api_key)
        gateway.mount(PROXY_ROUTE, proxy, exact=True)
        gateway.mount(PROXY_ROUTE + "/", proxy, exact=True)

    def _gateway_app(self) -> Gateway:
        from falemu.gateway import GatewayApp, create_app
        from falemu.gateway.keys import KeyStore

        apps = {
            config.alias: GatewayApp(config=config, pool=self._controllers[name])
            for name, config in self.configs.items()
        }
        return create_app(
            apps,
            settings=self.settings,
            events=self.events,
            keys=KeyStore(),
            clock=self.clock,
            queue_store=self.queue_store,
        )
