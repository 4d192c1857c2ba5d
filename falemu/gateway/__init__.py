"""fal's sync and queue APIs in front of runners: :func:`create_app` returns the gateway's ASGI app.

Importing this package is cheap; the gateway's modules load when :func:`create_app` is called.
See :mod:`falemu.gateway.app` for the URL layout.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from falemu.gateway.apps import GatewayApp

if TYPE_CHECKING:
    from falemu.clock import Clock
    from falemu.config.settings import Settings
    from falemu.events import EventBus
    from falemu.gateway.app import Gateway
    from falemu.gateway.keys import KeyStore
    from falemu.queue import QueueStore

__all__ = ["GatewayApp", "create_app"]


def create_app(
    apps: Mapping[str, GatewayApp],
    *,
    settings: Settings,
    events: EventBus,
    keys: KeyStore,
    clock: Clock | None = None,
    queue_store: QueueStore | None = None,
) -> Gateway:
    """The gateway for ``apps`` (keyed by alias), as an ASGI app to serve with uvicorn.

    The returned :class:`~falemu.gateway.app.Gateway` is a plain ASGI callable (lifespan supported);
    ``gateway.apps`` may be changed while it runs, and ``await gateway.aclose()`` stops its work when
    it is not served with a lifespan. ``queue_store`` keeps the queue (a throwaway store when None).
    """
    from falemu.gateway.app import Gateway

    return Gateway(apps, settings=settings, events=events, keys=keys, clock=clock, queue_store=queue_store)
