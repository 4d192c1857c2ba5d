"""Request faults (falemu.chaos) on both sync paths: the same answers whether a request would have taken
the fast path or the ASGI path, and the fast path back as soon as no fault is in effect."""

from __future__ import annotations

import time

import httpx
import pytest
from gateway_support import app_config

from falemu.chaos.faults import FaultSchedule, RequestPlan, parse_spec
from falemu.gateway.harness import GatewayHarness


class ScheduleFaults:
    """The gateway's side of falemu.chaos over a bare schedule (what the emulator's Chaos does)."""

    def __init__(self) -> None:
        self.schedule = FaultSchedule()

    def add(self, **data: object) -> None:
        self.schedule.add(parse_spec({"app": "echo", **data}), time.monotonic())

    def intercepts(self, alias: str) -> bool:
        return bool(self.schedule.active(alias))

    def on_request(self, alias: str, request_id: str) -> RequestPlan | None:
        return self.schedule.for_request(alias, time.monotonic())


def test_injected_errors_latency_and_cuts_on_both_sync_paths(harness: GatewayHarness, client: httpx.Client) -> None:
    url = harness.serve([app_config("echo")])
    gateway = harness.app
    assert gateway is not None
    faults = ScheduleFaults()
    gateway.faults = faults

    faults.add(kind="error", status=503, error_type="runner_connection_error", count=1)
    answer = client.post(f"{url}/local/echo/anything", json={})
    assert answer.status_code == 503
    assert answer.json() == {
        "detail": "No runner could be allocated to handle the request (fault f1, falemu chaos)",
        "error_type": "runner_connection_error",
    }
    assert answer.headers["x-fal-error-type"] == "runner_connection_error"
    assert answer.headers["x-fal-request-id"]

    faults.add(kind="error", status=429, count=1)
    limited = client.post(f"{url}/local/echo/anything", json={})
    assert limited.status_code == 429
    assert limited.json() == {"detail": "Too many concurrent requests (fault f2, falemu chaos)"}
    assert "x-fal-error-type" not in limited.headers

    faults.add(kind="latency", delay=0.3, count=1)
    began = time.monotonic()
    assert client.get(f"{url}/local/echo/fast").status_code == 200
    assert time.monotonic() - began >= 0.3

    faults.add(kind="cut", after_bytes=5, count=1)
    with pytest.raises(httpx.RemoteProtocolError):
        client.post(f"{url}/local/echo/anything", json={"pad": "x" * 500})
    assert client.post(f"{url}/local/echo/anything", json={}).status_code == 200

    # Nothing in effect: the fast path takes sync requests again (where the protocol has one).
    gateway.faults = None
    before = gateway.fast_requests
    assert client.get(f"{url}/local/echo/fast").status_code == 200
    assert gateway.fast_requests == before + (1 if harness.http == "gateway" else 0)
