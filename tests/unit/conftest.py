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


@pytest.fixture
def harness(keys: KeyStore) -> Iterator[GatewayHarness]:
    h = GatewayHarness(keys)
    yield h
    h.close()


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=httpx.Timeout(20.0)) as c:
        yield c
