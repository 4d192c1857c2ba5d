"""Test helpers that need no pytest: an emulator for a project, and a handle per deployed app.

::

    from falemu.testing import EmulatorHarness

    with EmulatorHarness("examples/direct-server") as harness:
        app = harness.app("greeter")
        assert app.run("/greet", {"name": "fal"})["message"] == "Hello, fal."
        handle = app.submit("/greet", {"name": "queue"})
        assert handle.result()["message"] == "Hello, queue."
        app.expire_idle()  # keep_alive runs out now: the next request is a cold start

The pytest plugin (``falemu_pytest``) wires these into fixtures; this module never imports pytest.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import httpx

from falemu.config.model import Project
from falemu.errors import FalemuError, UsageError
from falemu.events import Event, EventBus, RunnerLog

if TYPE_CHECKING:
    from falemu.chaos.client import Faults
    from falemu.emulator import Emulator
    from falemu.scaling.pool import RunnerInfo

__all__ = ["AppHandle", "EmulatorHarness", "QueueHandle", "RequestFailed", "fal_client_routed_to", "wait_until"]

FINISHED = "COMPLETED"


class RequestFailed(FalemuError):
    """A request through the gateway answered an error status."""

    def __init__(self, message: str, *, status_code: int, body: Any) -> None:
        super().__init__(message, hint="the response body is in .body")
        self.status_code = status_code
        self.body = body


def wait_until(predicate: Callable[[], bool], *, timeout: float = 30.0, interval: float = 0.05, what: str = "") -> None:
    """Poll ``predicate`` until it is true; raise :class:`TimeoutError` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what or 'condition'} not met within {timeout:g} s")
        time.sleep(interval)


def _body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text


def _raise_for(response: httpx.Response, what: str) -> None:
    if response.status_code >= 400:
        body = _body(response)
        detail = body.get("detail") if isinstance(body, dict) else body
        raise RequestFailed(
            f"{what} answered {response.status_code}: {detail}", status_code=response.status_code, body=body
        )


class QueueHandle:
    """A request submitted to the queue API: ``status()``, ``result()``, ``cancel()``."""

    __test__ = False

    def __init__(self, client: httpx.Client, submitted: Mapping[str, Any]) -> None:
        self._client = client
        self.submitted = dict(submitted)
        self.request_id: str = str(submitted["request_id"])
        self.status_url: str = str(submitted["status_url"])
        self.response_url: str = str(submitted["response_url"])
        self.cancel_url: str = str(submitted["cancel_url"])

    def status(self, *, logs: bool = False) -> dict[str, Any]:
        response = self._client.get(self.status_url, params={"logs": "1" if logs else "0"})
        _raise_for(response, f"status of {self.request_id}")
        data: dict[str, Any] = response.json()
        return data

    def wait(self, timeout: float = 60.0, interval: float = 0.05) -> dict[str, Any]:
        """Poll the status until COMPLETED; returns the last status."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.status()
            if status.get("status") == FINISHED:
                return status
            if time.monotonic() > deadline:
                raise TimeoutError(f"request {self.request_id} is still {status.get('status')} after {timeout:g} s")
            time.sleep(interval)

    def result(self, timeout: float = 60.0) -> Any:
        """Wait for completion and return the app's JSON output; RequestFailed when the app failed."""
        self.wait(timeout)
        response = self._client.get(self.response_url)
        _raise_for(response, f"result of {self.request_id}")
        return _body(response)

    def cancel(self) -> dict[str, Any]:
        response = self._client.put(self.cancel_url)
        data: dict[str, Any] = _body(response) if isinstance(_body(response), dict) else {"status": response.text}
        return data


class AppHandle:
    """One deployed app of a running emulator."""

    __test__ = False

    def __init__(self, emulator: Emulator, name: str) -> None:
        self.emulator = emulator
        self.name = name
        self.config = emulator.configs.get(name)
        self.alias = self.config.alias if self.config is not None else name
        self.url = emulator.app_url(name)
        self.queue_url = _queue_url(emulator, name)
        headers = {"Authorization": f"Key {emulator.api_key}"} if emulator.api_key else {}
        verify: str | bool = _ca_bundle() if self.url.startswith("https:") else True
        self.client = httpx.Client(headers=headers, timeout=httpx.Timeout(120.0, connect=10.0), verify=verify)
        self._faults: Faults | None = None

    def close(self) -> None:
        self.client.close()

    def _url(self, base: str, path: str) -> str:
        return base + ("/" + path.lstrip("/") if path and path != "/" else "")

    def request(self, method: str, path: str = "", **kwargs: Any) -> httpx.Response:
        """A raw request to the app's sync URL (``path`` relative to it)."""
        return self.client.request(method, self._url(self.url, path), **kwargs)

    def run(self, path: str = "", json: Any = None, *, method: str = "POST", **kwargs: Any) -> Any:
        """A sync call, as ``fal_client.run``: the JSON output, or :class:`RequestFailed`."""
        response = self.request(method, path, json=json, **kwargs)
        _raise_for(response, f"{method} {self.alias}{'/' + path.lstrip('/') if path else ''}")
        return _body(response)

    def submit(self, path: str = "", json: Any = None, **kwargs: Any) -> QueueHandle:
        """A queue submit, as ``fal_client.submit``."""
        response = self.client.post(self._url(self.queue_url, path), json=json, **kwargs)
        _raise_for(response, f"submit to {self.alias}")
        return QueueHandle(self.client, response.json())

    @property
    def runners(self) -> list[RunnerInfo]:
        return self.emulator.runners(self.name)

    @property
    def live_runners(self) -> list[RunnerInfo]:
        return [r for r in self.runners if r.state not in ("TERMINATING", "TERMINATED", "FAILURE_DELAY")]

    @property
    def events(self) -> list[Event]:
        """Every event of this app so far (build, runner states, requests, scaling)."""
        return [e for e in self.emulator.events.history if e.app in (self.name, self.alias)]

    def logs(self, runner: str | None = None) -> str:
        """The runners' log lines seen so far (one runner's with ``runner``)."""
        lines = [e.line for e in self.events if isinstance(e, RunnerLog) and (runner is None or e.runner == runner)]
        return "\n".join(lines)

    @property
    def openapi(self) -> dict[str, Any]:
        """The app's ``/openapi.json``, fetched through the gateway."""
        response = self.request("GET", "/openapi.json")
        _raise_for(response, f"GET {self.alias}/openapi.json")
        data: dict[str, Any] = response.json()
        return data

    def expire_idle(self) -> None:
        """Let keep_alive run out now: idle runners above min_concurrency stop (the next request is cold)."""
        self.emulator.expire_idle(self.name)

    @property
    def faults(self) -> Faults:
        """Fault injection for this app (:mod:`falemu.chaos.client`): ``.kill()``, ``.fail_starts()``,
        ``.error(503)``, ``.latency()``, ``.cut()``, ``.data()``, ``.clear()``."""
        if self._faults is None:
            from falemu.chaos.client import Faults

            self._faults = Faults(self.emulator, self.name)
        return self._faults

    def end_faults(self) -> None:
        """Clear the faults added through :attr:`faults` (the pytest plugin calls it after each test)."""
        if self._faults is not None and self._faults.added:
            self._faults.clear()

    def wait_for_runners(self, count: int, timeout: float = 60.0) -> None:
        wait_until(lambda: len(self.live_runners) == count, timeout=timeout, what=f"{count} live runner(s)")


def _ca_bundle() -> str:
    """falemu's CA plus the public roots: what verifies the gateway when it serves TLS."""
    from falemu.gateway.tls import client_bundle

    return client_bundle()


def _queue_url(emulator: Emulator, name: str) -> str:
    url = emulator.queue_url(name)
    if url != emulator.app_url(name):
        return url
    # One port serves both APIs; queue requests go under /queue (see falemu.gateway.app).
    config = emulator.configs.get(name)
    alias = config.alias if config is not None else name
    return f"{emulator.base_url}/queue/{emulator.settings.owner}/{alias}"


class EmulatorHarness:
    """An :class:`~falemu.emulator.Emulator` for a project, started on a free port, with app handles.

    ``project`` is a folder, a pyproject.toml or a loaded :class:`~falemu.config.Project` (default:
    discovered from the current folder, as fal does). ``overrides`` maps app names to scale settings
    (``{"greeter": {"keep_alive": 1}}``). Nothing starts before :meth:`start` (or ``with``).
    """

    __test__ = False

    def __init__(
        self,
        project: str | Path | Project | None = None,
        *,
        apps: Sequence[str] | None = None,
        runtime: str | None = None,
        gpu: str | None = None,
        keep_failed: bool | None = None,
        overrides: Mapping[str, Mapping[str, Any]] | None = None,
        warm: bool = False,
        events: EventBus | None = None,
        settings: Mapping[str, Any] | None = None,
    ) -> None:
        from falemu.config import load_project, project_settings

        self.project = project if isinstance(project, Project) else load_project(project)
        cli: dict[str, Any] = {
            "port": 0,
            "host": "127.0.0.1",
            "runtime": runtime,
            "gpu": gpu,
            "keep_failed": keep_failed,
        }
        cli.update(settings or {})
        self.settings = project_settings(self.project, cli=cli)
        self.apps = list(apps) if apps else list(self.project.app_names)
        self.overrides = {k: dict(v) for k, v in (overrides or {}).items()}
        self.warm = warm
        self.events = events if events is not None else EventBus()
        self._emulator: Emulator | None = None
        self._starting: Emulator | None = None  # between start() and its end
        self._handles: dict[str, AppHandle] = {}

    @property
    def emulator(self) -> Emulator:
        if self._emulator is None:
            raise UsageError("the harness is not started", hint="call start() or use it in a with block")
        return self._emulator

    @property
    def started(self) -> bool:
        return self._emulator is not None

    def start(self) -> EmulatorHarness:
        if self._emulator is not None:
            return self
        from falemu.emulator import Emulator

        emulator = Emulator(
            self.project, self.settings, apps=self.apps, events=self.events, overrides=self.overrides, warm=self.warm
        )
        # Held before it starts: a start cut short (Ctrl-C) has its clean-up cut short too when the
        # interrupts go on, and stop() then finishes it (Emulator.stop completes an earlier call).
        self._starting = emulator
        emulator.start()
        self._emulator, self._starting = emulator, None
        return self

    def stop(self) -> None:
        for handle in self._handles.values():
            handle.close()
        self._handles.clear()
        emulator, self._emulator = self._emulator or self._starting, None
        self._starting = None
        if emulator is not None:
            emulator.stop()

    def __enter__(self) -> EmulatorHarness:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def app(self, name: str | None = None) -> AppHandle:
        """The handle of app ``name`` (the only app when there is one)."""
        if name is None:
            if len(self.apps) != 1:
                raise UsageError(
                    f"the project has {len(self.apps)} apps; say which one",
                    hint=f"apps: {', '.join(self.apps)}",
                )
            name = self.apps[0]
        if name not in self._handles:
            if name not in self.apps:
                raise UsageError(f"app {name!r} is not started by this harness", hint=f"apps: {', '.join(self.apps)}")
            self._handles[name] = AppHandle(self.emulator, name)
        return self._handles[name]


@contextmanager
def fal_client_routed_to(emulator: Emulator) -> Iterator[None]:
    """Point the real ``fal_client`` at ``emulator`` for the duration of the block.

    ``fal_client.run("owner/app", ...)``, ``submit`` and friends go to the emulator's gateway: the
    module's URL formats are swapped for the gateway's (sync at ``/``, queue at ``/queue/``), its
    ``REST_URL`` and ``CDN_URL`` for the local CDN's (``/_falemu/rest``, ``/_falemu/cdn``: ``upload``,
    ``upload_file`` and ``upload_image`` store files there), ``FAL_KEY`` is the emulator's key, and the
    default clients forget cached credentials, CDN tokens and connections. Every change is undone on exit.
    """
    import os

    import fal_client
    import fal_client.client as fc

    urls = ("RUN_URL_FORMAT", "QUEUE_URL_FORMAT", "REALTIME_URL_FORMAT", "REST_URL", "CDN_URL")
    saved = {name: getattr(fc, name) for name in urls}
    saved_env = {name: os.environ.get(name) for name in ("FAL_KEY", "FAL_KEY_ID", "FAL_KEY_SECRET", "SSL_CERT_FILE")}
    base = emulator.base_url.rstrip("/")
    fc.RUN_URL_FORMAT = f"{base}/"
    fc.QUEUE_URL_FORMAT = f"{base}/queue/"
    fc.REALTIME_URL_FORMAT = base.replace("http", "ws", 1) + "/"
    fc.REST_URL = f"{base}/_falemu/rest"
    fc.CDN_URL = f"{base}/_falemu/cdn"
    for name in ("FAL_KEY_ID", "FAL_KEY_SECRET"):
        os.environ.pop(name, None)
    if emulator.api_key:
        os.environ["FAL_KEY"] = emulator.api_key
    if base.startswith("https:"):
        os.environ["SSL_CERT_FILE"] = _ca_bundle()  # httpx in fal_client trusts falemu's CA
    _forget_clients(fal_client)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(fc, name, value)
        for name, old in saved_env.items():
            if old is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = old
        _forget_clients(fal_client)


def _forget_clients(module: Any) -> None:
    for client in (getattr(module, "sync_client", None), getattr(module, "async_client", None)):
        if client is None:
            continue
        cached = vars(client)
        for name in ("_auth", "_client", "_token_manager"):
            value = cached.pop(name, None)
            close = getattr(value, "close", None)
            if callable(close) and isinstance(value, httpx.Client):
                close()
