"""The dashboard: fal's dashboard views for the apps of a running falemu, at the gateway's root.

::

    dashboard = Dashboard.for_emulator(emulator)   # subscribes its history to the emulator's events
    dashboard.mount(gateway)                        # /, /_falemu/api/, /_falemu/dashboard/, /metrics

Rooms: :mod:`~falemu.dashboard.history` (the request and runner store, fed by events and the
gateway's body recorder; its runner side in :mod:`~falemu.dashboard.runners`, its records in
:mod:`~falemu.dashboard.records`, the per-app figures it counts in :mod:`~falemu.dashboard.counters`),
:mod:`~falemu.dashboard.analytics` (pure aggregations),
:mod:`~falemu.dashboard.advisor` (the keep_alive what-if on the scaling policy),
:mod:`~falemu.dashboard.pricing` (the price table), :mod:`~falemu.dashboard.views` (what each page
shows, as data), :mod:`~falemu.dashboard.api` (the JSON API and its OpenAPI document),
:mod:`~falemu.dashboard.metrics` (Prometheus) and ``static/`` (the page: plain ES modules and a
vendored Preact + htm, no build step, nothing fetched from the network).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import mimetypes
import threading
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import TYPE_CHECKING, Any

from falemu.dashboard.history import AppInfo, History
from falemu.dashboard.pricing import Prices, load_prices

if TYPE_CHECKING:
    from falemu.dashboard.views import Board
    from falemu.emulator import Emulator
    from falemu.gateway.app import Gateway

__all__ = ["Board", "Dashboard", "History"]


def __getattr__(name: str) -> Any:
    if name == "Board":  # imported on first use: most of the dashboard's code is behind it
        from falemu.dashboard.views import Board

        return Board
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


API_PREFIX = "/_falemu/api/"
STATIC_PREFIX = "/_falemu/dashboard/"
METRICS_PATH = "/metrics"
ASGIApp = Callable[[Any, Any, Any], Awaitable[None]]


class Dashboard:
    """The history of one emulator and the ASGI apps that show it."""

    def __init__(
        self,
        board: Board | Callable[[], Board],
        *,
        history: History | None = None,
        api_key: str | None = None,
        verify: str | bool = True,
    ) -> None:
        """``board``, or how to make it on first use (then ``history`` is the one it will show)."""
        if callable(board):
            assert history is not None, "a board made on first use needs its history now"
            self._make_board: Callable[[], Board] | None = board
            self._board: Board | None = None
            self.history = history
        else:
            self._make_board, self._board = None, board
            self.history = board.history
        self._board_lock = threading.Lock()
        self.api_key = api_key
        self.verify = verify
        self._caller: Any = None
        self.api: LazyApp | None = None  # the JSON API, once mounted

    @property
    def board(self) -> Board:
        """The views (made on first use when the dashboard was given how to make them)."""
        board = self._board
        if board is None:
            with self._board_lock:
                if self._board is None:
                    assert self._make_board is not None
                    self._board = self._make_board()
                board = self._board
        return board

    @classmethod
    def for_emulator(cls, emulator: Emulator, prices: Prices | None = None) -> Dashboard:
        """A dashboard whose history follows ``emulator``'s events from now on.

        Its views (most of the dashboard's code) are imported and made when they are first needed (the
        gateway's build, which runs while the first runners start), not before.
        """
        apps = {
            config.alias: AppInfo(config.machine_types[0] if config.machine_types else "XS", config.gpu_count)
            for config in emulator.configs.values()
        }
        history = History(apps)
        history.follow(emulator.events)
        roomy_young_generation()

        def pool(alias: str) -> Any:
            for name, config in emulator.configs.items():
                if config.alias == alias:
                    try:
                        return emulator.controller(name)
                    except Exception:
                        return None
            return None

        table = prices if prices is not None else load_prices(getattr(emulator.settings, "prices", None))

        def board() -> Board:
            from falemu.dashboard.views import Board

            return Board(
                apps={c.alias: c for c in emulator.configs.values()},
                pools=pool,
                history=history,
                prices=table,
                owner=emulator.settings.owner,
                openapi=emulator.openapi,
            )

        verify: str | bool = True
        if emulator.settings.tls:
            from falemu.gateway.tls import client_bundle

            verify = client_bundle()
        dashboard = cls(board, history=history, verify=verify)
        dashboard._emulator = emulator
        return dashboard

    _emulator: Emulator | None = None

    def mount(self, gateway: Gateway, base_url: str = "") -> None:
        """Serve the dashboard on ``gateway`` and record its requests' bodies.

        The JSON API is a FastAPI app, whose import is most of a gateway's start-up: it is built on its
        first request, or ahead of it by :meth:`warm` (``falemu up`` calls it once it is ready).
        """
        emulator = self._emulator
        if emulator is not None:
            base_url = base_url or emulator.base_url
            self.api_key = self.api_key or emulator.api_key
        self.board.base_url = base_url
        keys = gateway.keys

        def allowed(header: str) -> bool:
            return bool(header) and keys.authenticate(header) is not None

        def capabilities() -> dict[str, Any]:
            initiate = "/_falemu/rest/storage/upload/initiate"
            if gateway.mounted(initiate) is not None:
                return {"uploads": "cdn", "upload_url": API_PREFIX + "uploads", "initiate_url": initiate}
            return {}

        def build() -> ASGIApp:
            from falemu.dashboard.api import Caller, create_api

            self._caller = Caller(base_url, self.api_key, self.verify)
            return create_api(self.board, self._caller, allowed_key=allowed, capabilities=capabilities)

        self.api = LazyApp(build)
        gateway.recorder = self.history
        gateway.mount(API_PREFIX, self.api)
        gateway.mount(STATIC_PREFIX, static_app)
        gateway.mount("/", static_app, exact=True)
        gateway.mount(METRICS_PATH, self.metrics_app, exact=True)

    def warm(self) -> None:
        """Build the JSON API now, in a thread, rather than on its first request."""
        if self.api is not None:
            self.api.warm()

    async def metrics_app(self, scope: Any, receive: Any, send: Any) -> None:
        from falemu.dashboard.metrics import CONTENT_TYPE, render

        if scope["type"] != "http":
            return
        body = render(self.board).encode()
        await _respond(send, 200, body, CONTENT_TYPE)

    async def aclose(self) -> None:
        if self.api is not None:
            await asyncio.to_thread(self.api.settle, 30.0)  # a build under way creates the caller
        if self._caller is not None:
            await self._caller.aclose()


class LazyApp:
    """An ASGI app built once, on its first request or ahead of it by :meth:`warm` (in a thread)."""

    def __init__(self, build: Callable[[], ASGIApp]) -> None:
        self._build = build
        self._app: ASGIApp | None = None
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @property
    def built(self) -> bool:
        return self._app is not None

    def get(self) -> ASGIApp:
        with self._lock:
            if self._app is None:
                self._app = self._build()
            return self._app

    def warm(self) -> None:
        with self._lock:
            if self._app is not None or self._thread is not None:
                return
            self._thread = threading.Thread(target=self._warm, name="falemu-dashboard-build", daemon=True)
            self._thread.start()

    def _warm(self) -> None:
        with contextlib.suppress(Exception):  # the first request builds it again and answers the error
            self.get()

    def settle(self, timeout: float) -> None:
        """Wait for a build :meth:`warm` started."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        app = self._app
        if app is None:
            app = await asyncio.to_thread(self.get)
        await app(scope, receive, send)


YOUNG_GENERATION = 20_000  # objects allocated before the collector looks at the young ones (Python: 700)


def roomy_young_generation(threshold: int = YOUNG_GENERATION) -> None:
    """Let Python's cyclic collector look at new objects less often (at most ``threshold`` at a time).

    The history keeps many objects for a long while (a request's events and bodies until a reader
    applies them or they are let go, records until the capacity lets them go). With the default
    threshold of 700 the collector walks them again and again as requests come (young, then older
    generations, then everything): in ``bench/dashboard.py`` that cost the gateway more CPU per
    request than recording itself. A larger young generation lets short-lived objects go uncollected
    and moves the rest on seldom. Without the dashboard the gateway keeps nothing for long and the
    collector hardly runs; a threshold already larger (or 0: off) is left as it is.
    """
    first, second, third = gc.get_threshold()
    if 0 < first < threshold:
        gc.set_threshold(threshold, second, third)


def _static_root() -> Any:
    return resources.files("falemu.dashboard").joinpath("static")


async def static_app(scope: Any, receive: Any, send: Any) -> None:
    """The page and its assets, from the package (``/`` is ``index.html``)."""
    if scope["type"] != "http":
        return
    path: str = scope["path"]
    name = "index.html" if path == "/" else path[len(STATIC_PREFIX) :]
    if scope["method"] not in ("GET", "HEAD"):
        await _respond(send, 405, b"method not allowed", "text/plain")
        return
    parts = [p for p in name.split("/") if p]
    if not parts or any(p.startswith(".") for p in parts):
        await _respond(send, 404, b"not found", "text/plain")
        return
    node = _static_root()
    for part in parts:
        node = node.joinpath(part)
    if not node.is_file():
        await _respond(send, 404, b"not found", "text/plain")
        return
    data = node.read_bytes()
    kind = mimetypes.guess_type(parts[-1])[0] or "application/octet-stream"
    if parts[-1].endswith((".js", ".mjs")):
        kind = "text/javascript"
    if kind.startswith("text/"):
        kind += "; charset=utf-8"
    await _respond(send, 200, b"" if scope["method"] == "HEAD" else data, kind, length=len(data))


async def _respond(send: Any, status: int, body: bytes, content_type: str, length: int | None = None) -> None:
    headers = [
        (b"content-type", content_type.encode()),
        (b"content-length", str(len(body) if length is None else length).encode()),
        (b"cache-control", b"no-cache"),
        (b"x-content-type-options", b"nosniff"),
    ]
    if content_type.startswith("text/html"):
        headers.append(
            (
                b"content-security-policy",
                b"default-src 'self'; img-src 'self' data: blob: http: https:; "
                b"media-src 'self' data: blob: http: https:; "
                b"style-src 'self' 'unsafe-inline'; connect-src 'self'; frame-ancestors 'none'",
            )
        )
        headers.append((b"x-frame-options", b"DENY"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
