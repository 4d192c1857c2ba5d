"""A gateway with the local CDN mounted, served on loopback, without apps or runners."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import TracebackType

from falemu.cdn.service import CdnService
from falemu.config.settings import Settings
from falemu.events import EventBus
from falemu.gateway import create_app
from falemu.gateway.keys import KeyStore
from falemu.gateway.serve import ThreadedServer


class CdnStack:
    """The real gateway (no apps) with a :class:`CdnService` for the process runtime mounted on it."""

    def __init__(
        self,
        tmp_path: Path,
        *,
        runtime: str = "process",
        files_url: str = "",
        bridge: str | None = None,
    ) -> None:
        self.keys = KeyStore(tmp_path / "config", user="local")
        self.key = self.keys.default_key()
        self.files_dir = tmp_path / "files"
        settings = Settings(port=0, files_dir=self.files_dir, files_url=files_url, data_dir=tmp_path / "data")
        self.gateway = create_app({}, settings=settings, events=EventBus(), keys=self.keys)
        self.server = ThreadedServer(self.gateway).start()
        self.base = self.server.url
        self.notices: list[str] = []
        self.cdn = CdnService(
            settings, runtime=runtime, gateway_base=self.base, bridge=lambda: bridge, notice=self.notices.append
        ).bind()
        self.cdn.mount_on(self.gateway)
        assert self.server.loop is not None
        asyncio.run_coroutine_threadsafe(self.cdn.start(), self.server.loop).result(20)

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Key {self.key}"}

    def close(self) -> None:
        if self.server.loop is not None and not self.server.loop.is_closed():
            asyncio.run_coroutine_threadsafe(self.cdn.aclose(), self.server.loop).result(20)
        self.server.stop()

    def __enter__(self) -> CdnStack:
        return self

    def __exit__(self, *exc: object | TracebackType | None) -> None:
        self.close()
