"""The dashboard's JSON API fuzzed with schemathesis against its own OpenAPI document, through the
gateway of a running Emulator (FakeRuntime): no 5xx, no answer outside the schema.

Server-sent event routes answer streams that end only when what they follow ends; they are left out
of the fuzzing here (the browser tests follow them) and checked below for their status and type.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from falemu.config.model import AppConfig, AppShape, Project, ScalingConfig
from falemu.config.settings import Settings
from falemu.contract.fuzz import run_fuzz
from falemu.emulator import Emulator
from falemu.runtime.fake import FakeRuntime

CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
)


@pytest.fixture
def emu(tmp_path: Path, isolated_home: Path) -> Iterator[Emulator]:
    apps = {
        "greeter": AppConfig(
            name="greeter",
            alias="greeter",
            shape=AppShape.DIRECT_SERVER,
            project_root=tmp_path,
            auth="public",
            machine_types=("GPU-A100",),
            scaling=ScalingConfig(keep_alive=30),
        )
    }
    project = Project(root=tmp_path, pyproject=tmp_path / "pyproject.toml", apps=apps)
    with Emulator(project, Settings(port=0, data_dir=isolated_home / "data"), runtime=FakeRuntime()) as e:
        yield e


def test_dashboard_api_conforms_to_its_openapi(emu: Emulator) -> None:
    with httpx.Client(base_url=emu.base_url, timeout=30) as client:
        for i in range(5):  # something to show: sync, queue, a failure
            client.post("/local/greeter/echo", json={"i": i})
        client.post("/local/greeter/echo?status=500", json={})
        client.post("/queue/local/greeter/echo", json={"q": 1})
        document = client.get("/_falemu/api/openapi.json").json()
        streams = [
            path
            for path, item in document["paths"].items()
            for op in item.values()
            if "text/event-stream" in op.get("responses", {}).get("200", {}).get("content", {})
        ]
        assert set(streams) == {
            "/_falemu/api/events",
            "/_falemu/api/requests/{request_id}/live",
            "/_falemu/api/runners/{runner}/logs/live",
            "/_falemu/api/playground/stream",
        }
        fuzzed = copy.deepcopy(document)
        for path in streams:
            del fuzzed["paths"][path]
        outcome = run_fuzz(fuzzed, emu.base_url, max_examples=15, seed=1, checks=CHECKS, negative=True)
        assert not outcome.errors, outcome.errors
        found = {
            k: [f"{f.operation}: {f.message} {f.detail[:300]}" for f in v] for k, v in outcome.findings.items() if v
        }
        assert not found, found
        assert len(outcome.operations) == len(fuzzed["paths"]) or outcome.cases > 100

        once = client.get("/_falemu/api/events", params={"once": "true"})
        assert once.status_code == 200
        assert once.headers["content-type"].startswith("text/event-stream")
        assert once.text.startswith("data: ")
        assert client.get("/_falemu/api/requests/nope/live").status_code == 404
        assert client.get("/_falemu/api/runners/nope/logs/live").status_code == 404
