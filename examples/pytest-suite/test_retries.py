"""The client's retry logic tested against faults falemu injects, as fal would produce them.

``falemu_app.faults`` puts a fault in effect for a count or a time window; the plugin clears whatever
a test added when it ends, so no fault leaks into the next test.
"""

from __future__ import annotations

import pytest
from greeter_client import GreeterError, greet


def test_a_503_storm_is_retried(falemu_app):
    storm = falemu_app.faults.error(503, count=2)  # fal's 503, error type runner_scheduling_failure
    result = greet(falemu_app.client, falemu_app.url, "storm")
    assert result["message"] == "Hello, storm."
    assert result["attempts"] == 3
    assert storm.ended
    assert storm.applied == 2


def test_a_429_on_every_other_request(falemu_app):
    falemu_app.faults.error(429, share=0.5, seconds=30)
    for name in ("a", "b", "c"):
        assert greet(falemu_app.client, falemu_app.url, name)["message"] == f"Hello, {name}."


def test_a_runner_that_dies_with_the_request(falemu_app):
    falemu_app.faults.latency(0.5, count=1)  # the next request takes 0.5 s to reach its runner ...
    killed = falemu_app.faults.kill(after=0.1)  # ... which dies 0.1 s after it took the request
    result = greet(falemu_app.client, falemu_app.url, "again")
    assert result["message"] == "Hello, again."
    assert result["attempts"] >= 2
    assert result["runner"] not in killed.targets  # a new runner answered


def test_a_broken_connection_is_retried(falemu_app):
    falemu_app.faults.cut(after_bytes=5, count=1)
    assert greet(falemu_app.client, falemu_app.url, "cut")["attempts"] == 2


def test_a_504_is_not_retried(falemu_app):
    falemu_app.faults.error(504, count=1)
    with pytest.raises(GreeterError) as caught:
        greet(falemu_app.client, falemu_app.url, "late")
    assert caught.value.status == 504
    assert caught.value.body["error_type"] == "request_timeout"


def test_the_queue_retries_for_clients_that_use_it(falemu_app):
    falemu_app.faults.error(503, count=3)
    assert falemu_app.submit("/greet", {"name": "queued"}).result()["message"] == "Hello, queued."
