"""Fixtures of the gateway tests: a key store, a gateway harness on loopback, an HTTP client."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from falemu.gateway.harness import GatewayHarness
from falemu.gateway.keys import KeyStore


@pytest.fixture
def keys(tmp_path: Path) -> KeyStore:
    return KeyStore(tmp_path / "config", user="local")


@pytest.fixture(params=["fast", "asgi"])
def harness(request: pytest.FixtureRequest, keys: KeyStore) -> Iterator[GatewayHarness]:
    """The gateway served by its own protocol with sync requests on the fast path where they can take it,
    and with every request through the ASGI app: both must answer alike."""
    h = GatewayHarness(keys, http="gateway" if request.param == "fast" else "asgi")
    yield h
    h.close()


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=httpx.Timeout(20.0)) as c:
        yield c
