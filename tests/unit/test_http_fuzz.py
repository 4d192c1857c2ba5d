"""A bounded slice of bench/http_fuzz.py against a gateway as `falemu up` serves it (in-process runners):
no crash, no 5xx for a client's mistake, no smuggled request, and a well-behaved caller served throughout."""

from __future__ import annotations

import importlib.util
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "http_fuzz.py"


@pytest.fixture(scope="module")
def fuzz() -> ModuleType:
    spec = importlib.util.spec_from_file_location("http_fuzz", BENCH)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["http_fuzz"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def errors(fuzz: ModuleType) -> Iterator[logging.Handler]:
    handler = fuzz.ErrorLog()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)


@pytest.mark.slow
def test_hostile_http_neither_crashes_the_gateway_nor_starves_other_callers(
    fuzz: ModuleType, errors: logging.Handler, isolated_home: Path
) -> None:
    with fuzz.local_gateway(isolated_home) as target:
        cases = fuzz.static_cases(target) + fuzz.random_cases(target, 80, seed=7)
        report = fuzz.run(
            target, cases, workers=16, case_timeout=3.0, idle=16, half_open=4, budget=120.0, errors=errors, long=False
        )
    assert len(report.results) == len(cases)
    assert report.crashes == []
    assert report.server_errors == []
    assert report.smuggled == []
    assert report.bystander_failures == []
    assert report.bystander_ok > 0
    assert report.alive_at_end
    assert report.unexpected == []  # every case not left to the protocol layer got a strict gateway's answer
    # Left unchecked in this short run: heads that never complete (answered after the 30 s head-read
    # timeout), and a valid request answered before the garbage pipelined after it (uvicorn answers 400 at
    # once); bench/http_fuzz.py without --short checks the first.
    unchecked = {"http09", "half-head", "pipelined-then-garbage", "idle connections"}
    assert {line.split(":")[0] for line in report.protocol_unmet} <= unchecked
    status = {r.name: r.statuses[:1] for r in report.results}
    assert status["long-url"] == [414]  # the gateway's own limits, not a runner's
    assert status["huge-header"] == status["many-headers"] == [431]
    assert status["timeout-nan"] == status["timeout-inf"] == status["timeout-huge"] == [400]
    assert status["cl-over-max-body"] == [413]
    assert status["body-stops"] == status["chunked-body-stops"] == [408]
    assert status["encoded-slash-owner"] == status["encoded-slash-app"] == [404]
    assert status["version-2.0"] == status["http09-bare"] == [400]
