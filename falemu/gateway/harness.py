"""Probe runners, static pools and a gateway on loopback threads: the gateway without Docker.

Used by the gateway's own tests and benchmarks; handy for any test that needs fal-shaped URLs in
front of a known server::

    harness = GatewayHarness(KeyStore(tmp_path))
    url = harness.serve([config])          # http://127.0.0.1:PORT
    ...
    harness.close()
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

from falemu.config.model import AppConfig
from falemu.config.settings import Settings
from falemu.events import Event, EventBus, RunnerLog
from falemu.gateway import GatewayApp, create_app
from falemu.gateway.app import Gateway
from falemu.gateway.keys import KeyStore
from falemu.gateway.listener import GatewayServer
from falemu.gateway.loop import new_event_loop
from falemu.gateway.probe import Probe
from falemu.gateway.serve import ThreadedServer
from falemu.gateway.server import GatewayAsgiProtocol, gateway_server_options
from falemu.gateway.static_pool import StaticPool
from falemu.queue import QueueStore
from falemu.runtime.base import Runner


@dataclass
class GatewayHarness:
    keys: KeyStore
    events: EventBus = field(default_factory=EventBus)
    servers: list[ThreadedServer] = field(default_factory=list)
    probes: dict[str, Probe] = field(default_factory=dict)
    pools: dict[str, StaticPool] = field(default_factory=dict)
    app: Gateway | None = None
    gateway: ThreadedServer | None = None
    replacements: int = 0
    # "gateway": falemu's protocol (fast path); "asgi": falemu's protocol, every request via the ASGI app;
    # "httptools": uvicorn's stock protocol. Served by GatewayServer: HTTP and HTTPS on one port.
    http: str = "gateway"
    loop: str = "uvloop"  # the gateway's event loop: "uvloop" (as falemu up, when installed) or "asyncio"

    def runner(self, runner_id: str, app: str) -> Runner:
        """A probe server whose log lines reach the event bus as this runner's RunnerLog events."""

        def on_log(line: str) -> None:
            self.events(RunnerLog(app, runner=runner_id, line=line))

        probe = Probe(runner_id, on_log=on_log)
        server = ThreadedServer(probe).start()
        self.servers.append(server)
        self.probes[runner_id] = probe
        return Runner(id=runner_id, app=app, host="127.0.0.1", port=server.port)

    def replace(self, old: Runner) -> Runner:
        """A replacement runner: same probe server, new id (the id is what the pool tracks)."""
        self.replacements += 1
        return Runner(id=f"{old.id}-r{self.replacements}", app=old.app, host=old.host, port=old.port)

    def serve(
        self,
        configs: list[AppConfig],
        runners_per_app: int = 1,
        *,
        settings: Settings | None = None,
        queue_store: QueueStore | None = None,
        runners: dict[str, list[Runner]] | None = None,
        **server_options: Any,
    ) -> str:
        """Start runners and the gateway; returns the gateway's base URL.

        ``runners`` gives an app servers of the test's own instead of probe runners.
        """
        apps = {}
        for config in configs:
            runners_of = (runners or {}).get(config.alias) or [
                self.runner(f"{config.alias}-{i}", config.alias) for i in range(runners_per_app)
            ]
            pool = StaticPool(config, runners_of, replace=self.replace)
            self.pools[config.alias] = pool
            apps[config.alias] = GatewayApp(config, pool)
        gateway = create_app(
            apps, settings=settings or Settings(), events=self.events, keys=self.keys, queue_store=queue_store
        )
        self.app = gateway
        options = gateway_server_options()
        if self.http == "asgi":
            options["http"] = GatewayAsgiProtocol
        elif self.http != "gateway":
            options["http"] = self.http
        options = {**options, **server_options}
        loop_factory = new_event_loop if self.loop == "uvloop" else None
        self.gateway = ThreadedServer(gateway, server_class=GatewayServer, loop_factory=loop_factory, **options).start()
        self.servers.append(self.gateway)
        return self.gateway.url

    def close(self) -> None:
        """Stop as ``falemu up`` does: no more queued requests to runners, then the gateway, then runners."""
        gateway, app = self.gateway, self.app
        if gateway is not None and app is not None and gateway.loop is not None and not gateway.loop.is_closed():
            with contextlib.suppress(RuntimeError):
                gateway.loop.call_soon_threadsafe(app.stopping)
        for server in reversed(self.servers):
            # runners are let go at once, as containers are; the gateway drains as falemu up's does
            server.stop(force=server is not self.gateway)

    def events_of(self, kind: type[Event]) -> list[Any]:
        return [e for e in self.events.history if isinstance(e, kind)]
