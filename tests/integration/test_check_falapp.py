"""`falemu check` on fal.Apps: the proxy example passes; an App whose endpoint answers outside its own
output model fails, and the report names the field. Both through the CLI, as CI runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parents[2]


def _check(cwd: Path, *args: str, base_image: str, tmp_path: Path) -> tuple[int, dict[str, Any]]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "pytest_plugin")]),
        "FALEMU_BUILD_ARG_BASE_IMAGE": base_image,
        "FALEMU_PYTHON_IMAGE": base_image,
        "FALEMU_CONFIG_DIR": str(tmp_path / "config"),
        "FALEMU_DATA_DIR": str(tmp_path / "data"),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "falemu", "check", "--json", "--max-examples", "10", "--seed", "1", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert proc.stdout.strip(), proc.stderr[-3000:]
    return proc.returncode, json.loads(proc.stdout)


def _checks(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    (app,) = report["apps"]
    return {check["name"]: check for check in app["checks"]}


def test_check_passes_on_the_proxy_example(base_image: str, tmp_path: Path) -> None:
    code, report = _check(ROOT / "examples" / "proxy-app", base_image=base_image, tmp_path=tmp_path)
    checks = _checks(report)
    assert code == 0, json.dumps([c for c in checks.values() if c["status"] == "failed"], indent=1)[:3000]
    assert "app.py::ProxyApp" in checks["config"]["summary"]
    assert checks["fuzz.response_schema_conformance"]["status"] == "passed"
    assert checks["fal.schemas"]["status"] == "passed"  # fal's own GET /health is not the author's to type


def test_check_names_the_field_an_endpoint_answers_outside_its_output_model(base_image: str, tmp_path: Path) -> None:
    code, report = _check(
        ROOT / "tests" / "apps" / "falapp", "apps.py::BadOutput", base_image=base_image, tmp_path=tmp_path
    )
    assert code == 1
    failed = {name: check for name, check in _checks(report).items() if check["status"] == "failed"}
    assert list(failed) == ["fuzz.response_schema_conformance"]
    finding = failed["fuzz.response_schema_conformance"]["findings"][0]
    assert finding["operation"] == "POST /reply"
    assert '"length" is a required property' in finding["detail"]
