"""How another terminal finds and reads a running ``falemu up``: a state file plus admin routes.

Each ``falemu up`` writes ``<state dir>/<pid>.json`` (mode 0600) with its gateway URL and a random
admin token, and removes it when it stops. The state dir is ``$XDG_RUNTIME_DIR/falemu`` when that is
set, else ``<cache dir>/falemu/run``. ``falemu ps`` and ``falemu logs`` read these files (dropping
files whose process is gone) and call the admin routes the gateway serves under ``/_falemu/``:

* ``GET /_falemu/ps``: apps, their URLs, counters and runners (JSON);
* ``GET /_falemu/logs?app=NAME&tail=N&follow=1``: runner log lines as JSON lines;
* ``GET /_falemu/events?tail=N&follow=1``: every event as JSON lines;
* ``POST /_falemu/keys/reload``: read the key file now (``falemu keys create/revoke`` call it, so a
  revoked key is refused at once).

The routes need ``X-Falemu-Admin-Token: <token>`` from the state file, so only the user who can read
the file can read logs.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hmac
import json
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from falemu.events import Event, RunnerLog
from falemu.runtime.labels import pid_alive

if TYPE_CHECKING:
    from falemu.emulator import Emulator

ADMIN_HEADER = "x-falemu-admin-token"
ADMIN_PREFIX = "/_falemu/"
ADMIN_ROUTES = frozenset({"/_falemu/ps", "/_falemu/logs", "/_falemu/events", "/_falemu/keys/reload"})


def state_dir() -> Path:
    runtime_dir = os.environ.get("XDG_RUNTIME_DIR")
    if runtime_dir:
        return Path(runtime_dir) / "falemu"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "falemu" / "run"


@dataclass(frozen=True)
class Instance:
    """One running ``falemu up``, as its state file describes it."""

    pid: int
    url: str
    admin_token: str
    project: str
    apps: list[str]
    started: float
    verify: str | bool = True  # CA bundle when the gateway serves HTTPS with falemu's CA
    path: Path = field(default=Path(), compare=False)

    def to_json(self) -> str:
        data = dataclasses.asdict(self)
        data.pop("path")
        return json.dumps(data, indent=2)


def register(emulator: Emulator, *, verify: str | bool = True) -> Path:
    """Write the state file of this process; returns its path (pass it to :func:`unregister`)."""
    directory = state_dir()
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = directory / f"{os.getpid()}.json"
    instance = Instance(
        pid=os.getpid(),
        url=emulator.base_url,
        admin_token=emulator.admin_token,
        project=str(emulator.project.root),
        apps=emulator.apps,
        started=time.time(),
        verify=verify,
    )
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, instance.to_json().encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return path


def unregister(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def instances(project: Path | None = None) -> list[Instance]:
    """Every running ``falemu up`` of this user (serving ``project``'s root when given), oldest first.

    Stale state files are removed on the way.
    """
    directory = state_dir()
    if not directory.is_dir():
        return []
    found: list[Instance] = []
    for path in sorted(directory.glob("*.json")):
        try:
            data = json.loads(path.read_text())
            instance = Instance(**data, path=path)
        except (OSError, ValueError, TypeError):
            continue
        if not pid_alive(instance.pid):
            unregister(path)
            continue
        if project is not None and Path(instance.project).resolve() != project.resolve():
            continue
        found.append(instance)
    return sorted(found, key=lambda i: i.started)


# -- admin routes -------------------------------------------------------------------------------------

Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]


def admin_app(emulator: Emulator) -> Callable[[dict[str, Any], Receive, Send], Awaitable[None]]:
    """The ASGI app behind ``/_falemu/`` (see the module docstring)."""

    async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        token = headers.get(ADMIN_HEADER, "")
        if not hmac.compare_digest(token.encode(), emulator.admin_token.encode()):
            await _json(send, 401, {"detail": "falemu admin token missing or wrong", "error_type": "unauthorized"})
            return
        path = scope["path"][len(ADMIN_PREFIX) :].rstrip("/")
        query = {k: v[-1] for k, v in parse_qs(scope.get("query_string", b"").decode()).items()}
        follow = query.get("follow", "0").lower() in ("1", "true", "yes")
        try:
            tail = int(query.get("tail", "200"))
        except ValueError:
            tail = 200
        if path == "ps":
            await _json(send, 200, ps_snapshot(emulator))
        elif path == "logs":
            app_name = query.get("app") or None
            if app_name is not None and app_name not in _app_names(emulator):
                await _json(send, 404, {"detail": f"no app {app_name} in this falemu up", "error_type": "not_found"})
                return

            def wanted(event: Event) -> bool:
                return isinstance(event, RunnerLog) and (app_name is None or event.app in _aliases(emulator, app_name))

            await _stream(emulator, send, receive, wanted, tail, follow)
        elif path == "events":
            await _stream(emulator, send, receive, lambda event: True, tail, follow)
        elif path == "keys/reload" and scope.get("method") == "POST":
            if emulator.gateway is not None:
                emulator.gateway.keys.reload()
            await _json(send, 200, {"reloaded": True})
        else:
            await _json(send, 404, {"detail": f"no admin route {scope['path']}", "error_type": "not_found"})

    return app


def _app_names(emulator: Emulator) -> set[str]:
    names = set(emulator.configs)
    names.update(c.alias for c in emulator.configs.values())
    return names


def _aliases(emulator: Emulator, app: str) -> set[str]:
    for name, config in emulator.configs.items():
        if app in (name, config.alias):
            return {name, config.alias}
    return {app}


def ps_snapshot(emulator: Emulator) -> dict[str, Any]:
    apps: list[dict[str, Any]] = []
    now = emulator.clock.now()
    for name, config in emulator.configs.items():
        controller = emulator.controller(name)
        apps.append(
            {
                "name": name,
                "alias": config.alias,
                "url": emulator.app_url(name),
                "queue_url": emulator.queue_url(name),
                "auth": config.effective_auth,
                "scaling": dataclasses.asdict(config.scaling),
                "stats": dataclasses.asdict(controller.stats),
                "waiting": controller.waiting,
                "backoff": controller.backoff(),
                "revision": controller.revision,
                "revisions": emulator.reloader.rows(name),
                "faults": emulator.fault_rows(config.alias),
                "runners": [
                    {**dataclasses.asdict(r), "age": max(0.0, now - r.started_at)} for r in controller.runners()
                ],
            }
        )
    return {"pid": os.getpid(), "url": emulator.base_url, "project": str(emulator.project.root), "apps": apps}


async def _json(send: Send, status: int, payload: Any) -> None:
    body = json.dumps(payload).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _stream(
    emulator: Emulator,
    send: Send,
    receive: Receive,
    wanted: Callable[[Event], bool],
    tail: int,
    follow: bool,
) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/x-ndjson")]})
    async for event in _events(emulator, wanted, tail, follow, receive):
        line = json.dumps(event.to_dict(), default=str).encode() + b"\n"
        await send({"type": "http.response.body", "body": line, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


async def _events(
    emulator: Emulator, wanted: Callable[[Event], bool], tail: int, follow: bool, receive: Receive
) -> AsyncIterator[Event]:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Event] = asyncio.Queue()

    def push(event: Event) -> None:
        if wanted(event):
            with contextlib.suppress(RuntimeError):  # the loop closed
                loop.call_soon_threadsafe(queue.put_nowait, event)

    unsubscribe = emulator.events.subscribe(push) if follow else None
    try:
        history = [e for e in emulator.events.history if wanted(e)]
        shown = history[-tail:] if tail > 0 else []
        seen = {id(e) for e in history}  # subscribed before the snapshot: skip what both delivered
        for event in shown:
            yield event
        if unsubscribe is None:
            return
        disconnected = asyncio.ensure_future(_wait_disconnect(receive))
        try:
            while not emulator.stopping:
                getter = asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait({getter, disconnected}, timeout=0.5, return_when=asyncio.FIRST_COMPLETED)
                if getter in done:
                    event = getter.result()
                    if id(event) not in seen:
                        yield event
                    continue
                getter.cancel()
                if disconnected in done:
                    return
        finally:
            disconnected.cancel()
    finally:
        if unsubscribe is not None:
            unsubscribe()


async def _wait_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


def notify_key_change() -> int:
    """Tell every running ``falemu up`` of this user to read the key file now; returns how many heard it."""
    import httpx

    told = 0
    for instance in instances():
        try:
            response = httpx.post(
                f"{instance.url}/_falemu/keys/reload",
                headers={ADMIN_HEADER: instance.admin_token},
                timeout=5.0,
                verify=instance.verify,
            )
        except httpx.HTTPError:
            continue
        told += response.status_code == 200
    return told
