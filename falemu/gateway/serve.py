"""Serve an ASGI app with uvicorn on a background thread (tests, benchmarks, embedding)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

from falemu.errors import FalemuError


class ThreadedServer:
    """uvicorn on ``host:port`` (0 picks a free port) in a daemon thread; ``url`` once started."""

    def __init__(
        self,
        app: Any,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_certfile: str | None = None,
        ssl_keyfile: str | None = None,
        server_class: type[Any] | None = None,
        loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
        **config: Any,
    ) -> None:
        """``server_class``: a ``uvicorn.Server`` subclass (the gateway's is
        :class:`falemu.gateway.listener.GatewayServer`, HTTP and HTTPS on one port); ``loop_factory``:
        the event loop to serve on (default: asyncio's)."""
        import uvicorn

        options: dict[str, Any] = {
            "log_level": "warning",
            "access_log": False,
            "lifespan": "on",
            "server_header": False,
            "date_header": False,
            "timeout_graceful_shutdown": 2,
        }
        options.update(config)
        self.config = uvicorn.Config(
            app, host=host, port=port, ssl_certfile=ssl_certfile, ssl_keyfile=ssl_keyfile, **options
        )
        self.server = (server_class or uvicorn.Server)(self.config)
        self.tls = ssl_certfile is not None
        self.host = host
        self.port = port
        self.loop: asyncio.AbstractEventLoop | None = None
        self._loop_factory = loop_factory or asyncio.new_event_loop
        self._thread: threading.Thread | None = None

    def _run(self) -> None:
        loop = self._loop_factory()
        self.loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self.server.serve())
            # requests still running (a forced stop does not wait for them) end here, not at exit
            pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        finally:
            loop.close()

    def start(self, timeout: float = 20.0) -> ThreadedServer:
        self._thread = threading.Thread(target=self._run, name="falemu-uvicorn", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise FalemuError(
                    f"the server on {self.host}:{self.port} did not start", hint="is the port already in use?"
                )
            time.sleep(0.01)
        servers = getattr(self.server, "servers", [])
        for server in servers:
            for sock in server.sockets:
                self.port = sock.getsockname()[1]
                break
        return self

    @property
    def url(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{self.host}:{self.port}"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def stop(self, *, force: bool = False) -> None:
        """Stop serving; with ``force``, without waiting for open connections and their requests."""
        self.server.force_exit = force
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> ThreadedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
