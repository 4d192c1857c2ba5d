"""The gateway's event loop: uvloop's when installed, else asyncio's (importable without the server's modules)."""

from __future__ import annotations

import asyncio


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's event loop when uvloop is installed (it costs the gateway less per request), else asyncio's."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency, but optional at run time
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()
