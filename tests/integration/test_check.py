"""`falemu check` end to end: the example passes, each broken app fails naming its fault.

Each run is a real `falemu check` process against the Docker engine: build, runner start, gateway,
schemathesis. The apps under tests/apps/broken-* each carry one fault.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "direct-server"
TEST_APPS = ROOT / "tests" / "apps"
FUZZ_CHECKS = [
    "fuzz.not_a_server_error",
    "fuzz.status_code_conformance",
    "fuzz.content_type_conformance",
    "fuzz.response_schema_conformance",
    "fuzz.response_headers_conformance",
]


def falemu_check(project: Path, *args: str, base_image: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, FALEMU_BUILD_ARG_BASE_IMAGE=base_image)
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "falemu",
            "check",
            "--project",
            str(project),
            "--max-examples",
            "10",
            "--seed",
            "7",
            *args,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )


def statuses(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    data = json.loads(result.stdout)
    (app,) = data["apps"]
    return {c["name"]: c for c in app["checks"]}


def test_example_passes_and_junit_lists_each_check(base_image: str, tmp_path: Path) -> None:
    junit = tmp_path / "reports" / "falemu.xml"
    baseline = tmp_path / "openapi-baseline.json"
    result = falemu_check(
        EXAMPLE, "--junit-xml", str(junit), "--baseline", str(baseline), "--update-baseline", base_image=base_image
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "PASSED" in result.stdout
    assert "✔ fuzz.response_schema_conformance" in result.stdout
    root = ET.parse(junit).getroot()
    suite = root.find("testsuite")
    assert suite is not None
    names = [case.get("name") for case in suite.findall("testcase")]
    assert names == [
        "config",
        "build",
        "start",
        "bind",
        "openapi.present",
        "openapi.valid",
        "fal.schemas",
        *FUZZ_CHECKS,
        "baseline",
        "startup_time",
        "cold_start",
    ]
    assert suite.get("failures") == "0"
    assert not any(case.find("failure") is not None for case in suite.findall("testcase"))
    recorded = json.loads(baseline.read_text())
    assert "/greet" in recorded["paths"]


@pytest.mark.parametrize(
    ("folder", "failed", "fault"),
    [
        ("broken-schema", "fuzz.response_schema_conformance", "Response violates schema"),
        ("broken-500", "fuzz.not_a_server_error", "Server error"),
        ("broken-loopback", "bind", "fal needs 0.0.0.0"),
        ("broken-no-openapi", "openapi.present", "no /openapi.json"),
    ],
)
def test_broken_app_fails_naming_its_fault(base_image: str, folder: str, failed: str, fault: str) -> None:
    result = falemu_check(TEST_APPS / folder, "--json", base_image=base_image)
    assert result.returncode == 1, result.stdout + result.stderr
    checks = statuses(result)
    assert checks[failed]["status"] == "failed"
    assert any(fault in f["message"] for f in checks[failed]["findings"]), checks[failed]
    assert checks["config"]["status"] == "passed"
    assert checks["build"]["status"] == "passed"


def test_removed_field_fails_against_the_committed_baseline(base_image: str) -> None:
    project = TEST_APPS / "broken-removed-field"
    result = falemu_check(project, "--baseline", str(project / "openapi-baseline.json"), base_image=base_image)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "✘ baseline" in result.stdout
    assert "POST /greet: response field 'length' was removed" in result.stdout
    # everything else about the app is fine: only the baseline fails
    failing = [line for line in result.stdout.splitlines() if line.strip().startswith("✘")]
    assert len(failing) == 1, result.stdout


def test_app_answering_503_while_it_loads_passes_and_start_up_counts_the_load(base_image: str) -> None:
    result = falemu_check(TEST_APPS / "loads-slowly", "--json", base_image=base_image)
    assert result.returncode == 0, result.stdout + result.stderr
    checks = statuses(result)
    assert all(c["status"] == "passed" for c in checks.values()), {k: c["status"] for k, c in checks.items()}
    assert "answered 503 (loading)" in checks["start"]["summary"]
    # LOAD_SECONDS is 4: start-up and the cold start are measured to the first non-503 answer.
    startup = float(checks["startup_time"]["summary"].split(" s of")[0])
    cold = float(checks["cold_start"]["summary"].removeprefix("cold start ").split(" s")[0])
    assert startup >= 4.0
    assert cold >= 4.0
    assert "still loading" in result.stderr


def test_sse_app_documented_as_json_passes_with_a_warning_and_fails_under_strict(
    base_image: str, tmp_path: Path
) -> None:
    junit = tmp_path / "falemu.xml"
    result = falemu_check(TEST_APPS / "sse-stream", "--junit-xml", str(junit), base_image=base_image)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 warning (not failures; --strict fails them):" in result.stdout
    assert "! streamer fal.streaming: POST /stream" in result.stdout
    assert ET.parse(junit).getroot().get("warnings") == "1"
    strict = falemu_check(TEST_APPS / "sse-stream", "--strict", "--json", base_image=base_image)
    assert strict.returncode == 1, strict.stdout + strict.stderr
    checks = statuses(strict)
    assert checks["fal.streaming"]["status"] == "failed"
    assert json.loads(strict.stdout)["strict"] is True
