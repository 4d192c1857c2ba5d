"""An app's own test suite, written against falemu's fixtures.

`falemu_app` is the greeter deployed on falemu: its gateway URL, an authenticated client, the sync and
queue APIs, its runners, logs and events. Nothing here knows about Docker.
"""

from __future__ import annotations

import pytest


def test_greets(falemu_app):
    result = falemu_app.run("/greet", {"name": "fal"})
    assert result["message"] == "Hello, fal."
    assert result["length"] == 11
    assert result["runner"] in {r.id for r in falemu_app.runners}  # FAL_JOB_ID of the runner that answered


def test_excited(falemu_app):
    assert falemu_app.run("/greet", {"name": "fal", "excited": True})["message"] == "Hello, fal!"


def test_rejects_an_empty_name(falemu_app):
    response = falemu_app.client.post(falemu_app.url + "/greet", json={"name": ""})
    assert response.status_code == 422


def test_queue(falemu_app):
    request = falemu_app.submit("/greet", {"name": "queue"})
    assert request.result()["message"] == "Hello, queue."
    assert request.status()["status"] == "COMPLETED"


def test_cold_start_after_keep_alive(falemu_app):
    falemu_app.run("/greet", {"name": "warm"})
    falemu_app.expire_idle()  # keep_alive (300 s in the pyproject) runs out now
    assert falemu_app.live_runners == []
    assert falemu_app.run("/greet", {"name": "cold"})["message"] == "Hello, cold."
    ready = [e for e in falemu_app.events if e.kind == "RunnerReady"]
    assert ready[-1].cold_start


@pytest.mark.falemu(app="greeter", min_concurrency=1)
def test_min_concurrency_keeps_a_warm_runner(falemu_app):
    falemu_app.expire_idle()
    assert len(falemu_app.live_runners) == 1


def test_code_that_calls_fal_client(fal_client_emulated):
    import fal_client

    # Unchanged application code: it calls fal, and falemu answers.
    result = fal_client.run("local/greeter/greet", arguments={"name": "client"})
    assert result["message"] == "Hello, client."


@pytest.mark.requires_gpu
def test_on_a_gpu_host(falemu_app):
    # machine_type = "GPU-H100": on an engine with GPUs the runner gets one.
    assert falemu_app.run("/greet", {"name": "gpu"})["message"] == "Hello, gpu."
