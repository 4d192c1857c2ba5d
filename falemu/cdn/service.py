"""The local CDN of one falemu process: its store, the uploader socket, the file listener, the mounts.

:class:`CdnService` is made by the emulator once the gateway's socket is bound:

1. :meth:`bind` opens the store, the uploader's unix socket (in a fresh private folder, mounted into
   every runner at ``/run/fal``) and, when needed, a plain-HTTP listener for files on an address runners
   can reach, and settles ``files_base``, the start of every file URL;
2. :meth:`runner_mounts` / :meth:`runner_env` go into each runner's spec;
3. :meth:`mount_on` gives the gateway its routes (``/_falemu/cdn/``, ``/_falemu/rest/``, and the hosts
   ``v3.fal.media`` / ``rest.fal.ai`` when the gateway routes by host);
4. :meth:`start` serves the socket and the listener on the emulator's event loop; :meth:`aclose` stops
   them and removes the socket's folder.

Which address file URLs use (``files_base``):

- ``files_url`` setting (``FALEMU_FILES_URL``) when set, as given (nothing extra listens);
- docker runtime on a machine that has the engine's bridge (Linux): ``http://<bridge address>:<port>``,
  a listener for the CDN's routes only, on the gateway's port number when free there. The host reaches
  that address as well as runners do, so one URL serves both;
- otherwise the gateway's own address (process runtime; Docker Desktop, where a notice says to set
  ``files_url``). File URLs are plain HTTP, which runners fetch without falemu's CA.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import stat
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from falemu import prelaunch
from falemu.cdn.storage import CDN_PREFIX, REST_PREFIX, Storage
from falemu.cdn.store import FileStore

if TYPE_CHECKING:
    import uvicorn

    from falemu.cdn.rest_api import RestApp
    from falemu.config.settings import Settings
    from falemu.gateway.keys import KeyStore

SOCKET_NAME = prelaunch.API_SOCKET_NAME
SOCKET_DIR_PREFIX = prelaunch.API_DIR_PREFIX
RUNNER_SOCKET_DIR = "/run/fal"  # fal's default FAL_API_SOCKET is /run/fal/api.sock
CDN_HOSTS = ("v3.fal.media",)
REST_HOSTS = ("rest.fal.ai", "rest.alpha.fal.ai")


class CdnService:
    """See the module docstring."""

    def __init__(
        self,
        settings: Settings,
        *,
        runtime: str,
        gateway_base: str,
        keys: KeyStore | None = None,
        bridge: Callable[[], str | None] | None = None,
        notice: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        self.runtime = runtime
        self.gateway_base = gateway_base.rstrip("/")
        self.storage = Storage(FileStore(Path(settings.files_dir)), keys)
        self.socket_dir: Path | None = None
        self.files_address: str | None = None  # the IP address file URLs use, when known
        self._bridge = bridge
        self._notice = notice or (lambda message: None)
        self._uds: socket.socket | None = None
        self._listener: socket.socket | None = None
        self._servers: list[tuple[uvicorn.Server, asyncio.Task[None]]] = []

    # -- set-up ----------------------------------------------------------------------------------------
    @property
    def files_base(self) -> str:
        return self.storage.files_base

    @property
    def socket_path(self) -> Path | None:
        return self.socket_dir / SOCKET_NAME if self.socket_dir is not None else None

    def bind(self) -> CdnService:
        """Open the store and the sockets; settle the file URLs' address. Raises OSError on failure."""
        store = self.storage.store
        store.root.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):
            store.clear_incoming()  # expired files wait for sweep_later(): the store never serves them
        self._bind_uploader()
        self._settle_files_base()
        return self

    def _bind_uploader(self) -> None:
        # A short path (unix socket paths are limited to about 100 bytes), private by its random name;
        # runners may run as any user, so the folder can be entered and the socket written by all.
        with contextlib.suppress(OSError):
            remove_stale_socket_dirs()
        early = prelaunch.take_api_dir()  # made by an early launch whose runner mounts it already
        bound = prelaunch.take_api_socket()  # its socket, listening since then
        if early is None and bound is not None:
            bound.close()
            bound = None
        folder = Path(early) if early is not None else Path(tempfile.mkdtemp(prefix=SOCKET_DIR_PREFIX))
        os.chmod(folder, 0o711)
        sock = bound or socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        path = folder / SOCKET_NAME
        try:
            if bound is None:
                sock.bind(str(path))
                os.chmod(path, 0o666)
                sock.listen(128)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            shutil.rmtree(folder, ignore_errors=True)
            raise
        self.socket_dir, self._uds = folder, sock

    def _settle_files_base(self) -> None:
        configured = (self.settings.files_url or "").rstrip("/")
        gateway = urlsplit(self.gateway_base)
        if configured:
            self.storage.files_base = configured
            self.files_address = _resolve(urlsplit(configured).hostname or "")
            return
        if self.runtime == "docker":
            bridge = self._bridge() if self._bridge is not None else None
            if bridge is not None:
                self._listen(bridge, gateway.port or 0)
                return
            self._notice(
                "runners in containers cannot reach file URLs on this machine's 127.0.0.1 (the engine's bridge "
                "is not on this machine, as with Docker Desktop); set files_url (FALEMU_FILES_URL) to an address "
                f"both reach, for example http://<this machine's LAN address>:{gateway.port} with --host 0.0.0.0"
            )
        self.storage.files_base = self.gateway_base
        self.files_address = _resolve(gateway.hostname or "127.0.0.1")

    def _listen(self, address: str, port: int) -> None:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            try:
                sock.bind((address, port))
            except OSError:
                if not port:
                    raise
                sock.bind((address, 0))  # the gateway's port number is taken on that address
            sock.listen(512)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self._listener = sock
        shown = f"[{address}]" if ":" in address else address
        self.storage.files_base = f"http://{shown}:{sock.getsockname()[1]}"
        self.files_address = address

    def sweep_later(self) -> None:
        """Remove expired files in a thread (called once the emulator serves: nothing waits for it)."""
        store = self.storage.store
        threading.Thread(target=_quietly, args=(store.sweep_expired,), name="falemu-cdn-sweep", daemon=True).start()

    # -- what runners get ------------------------------------------------------------------------------
    def runner_mounts(self) -> dict[str, str]:
        if self.runtime != "docker" or self.socket_dir is None:
            return {}  # a host process reaches the socket at its own path
        return {str(self.socket_dir): RUNNER_SOCKET_DIR}

    def runner_env(self) -> dict[str, str]:
        env: dict[str, str] = {}
        if self.socket_path is not None:
            in_runner = f"{RUNNER_SOCKET_DIR}/{SOCKET_NAME}" if self.runtime == "docker" else str(self.socket_path)
            env.update({"FAL_USE_LOCAL_UPLOADER": "1", "FAL_API_SOCKET": in_runner})
        if self.files_address:
            env["FALEMU_PUBLIC_ADDRESSES"] = self.files_address
        return env

    # -- routes ----------------------------------------------------------------------------------------
    def mount_on(self, gateway: Any) -> None:
        """Give the gateway the CDN's routes: path prefixes always, fal's hosts when it routes by host.

        Uploads are authorized with the gateway's key store (any local user's key).
        """
        from falemu.cdn.files_api import FilesApp
        from falemu.cdn.rest_api import RestApp

        if self.storage.keys is None:
            self.storage.keys = getattr(gateway, "keys", None)
        gateway.mount(CDN_PREFIX + "/", FilesApp(self.storage, CDN_PREFIX))
        gateway.mount(REST_PREFIX + "/", RestApp(self.storage, REST_PREFIX))
        mount_host = getattr(gateway, "mount_host", None)
        if callable(mount_host):
            for host in CDN_HOSTS:
                mount_host(host, FilesApp(self.storage))
            for host in REST_HOSTS:
                mount_host(host, RestApp(self.storage))

    def rest_app(self) -> RestApp:
        """fal's REST storage routes with no prefix (what a request for ``rest.fal.ai`` reaches)."""
        from falemu.cdn.rest_api import RestApp

        return RestApp(self.storage)

    # -- serving ---------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Serve the uploader socket and the file listener on the running loop."""
        from falemu.cdn.files_api import FilesApp
        from falemu.cdn.uploader import UploaderApp

        if self._uds is not None:
            await self._serve(UploaderApp(self.storage), self._uds)
        if self._listener is not None:
            await self._serve(FilesApp(self.storage, CDN_PREFIX), self._listener)

    async def _serve(self, app: Any, sock: socket.socket) -> None:
        import uvicorn

        config = uvicorn.Config(
            app,
            lifespan="off",
            log_level="warning",
            access_log=False,
            server_header=False,
            timeout_graceful_shutdown=1,
        )
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve(sockets=[sock]))
        self._servers.append((server, task))  # first: a start cancelled while it waits still gets it stopped
        while not server.started and not task.done():
            await asyncio.sleep(0.01)
        if task.done():
            task.result()

    async def aclose(self) -> None:
        for server, _ in self._servers:
            server.should_exit = True
        tasks = [task for _, task in self._servers]
        if tasks:
            await asyncio.wait(tasks, timeout=5)
            late = [task for task in tasks if not task.done()]
            for task in late:
                task.cancel()
            if late:  # let them end before the loop closes (a pending task is destroyed with it)
                await asyncio.wait(late, timeout=1)
        self._servers.clear()
        self.close_sockets()

    def close_sockets(self) -> None:
        for sock in (self._uds, self._listener):
            if sock is not None:
                sock.close()
        self._uds = self._listener = None
        if self.socket_dir is not None:
            shutil.rmtree(self.socket_dir, ignore_errors=True)
            self.socket_dir = None


def remove_stale_socket_dirs(parent: Path | None = None, *, min_age: float = 60.0) -> int:
    """Remove uploader socket folders (this user's) that no process serves any more; how many went.

    A falemu process removes its own folder when it stops; one killed outright (SIGKILL) cannot. Its
    socket then refuses connections, which is how a leftover is told from a live one.
    """
    parent = parent or Path(tempfile.gettempdir())
    removed = 0
    now = time.time()
    for folder in parent.glob(SOCKET_DIR_PREFIX + "*"):
        try:
            info = folder.lstat()
        except OSError:
            continue
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or now - info.st_mtime < min_age:
            continue
        sock = folder / SOCKET_NAME
        if sock.exists() and _serves(sock):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed += 1
    return removed


def _serves(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


def _resolve(host: str) -> str | None:
    """The first IP address of ``host`` (itself when it is one); None when it does not resolve."""
    if not host:
        return None
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError:
        return None
    return str(infos[0][4][0]) if infos else None


def _quietly(work: Callable[[], object]) -> None:
    with contextlib.suppress(OSError):
        work()
