"""The report as text, JSON and JUnit XML."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

from falemu.contract.junit import write_junit_xml
from falemu.contract.results import AppReport, CheckResult, Finding, Report


def sample() -> Report:
    app = AppReport(app="greeter", url="http://127.0.0.1:8787/local/greeter")
    app.add(CheckResult("openapi.present", "GET /openapi.json answers", summary="OpenAPI 3.1.0, 2 operations"))
    failed = app.add(CheckResult("fuzz.not_a_server_error", "no 5xx"))
    failed.fail("Server error", operation="POST /double", repro="curl -X POST -d '{\"n\": 999}' http://x/double")
    warn = app.add(CheckResult("keep_alive", "keep_alive vs cold start", status="warning"))
    warn.advice.append("raise keep_alive")
    app.add(CheckResult("baseline", "no breaking change").skip("no document"))
    return Report(apps=[app])


def test_counts_and_exit_code() -> None:
    report = sample()
    assert report.counts() == {"passed": 1, "failed": 1, "warning": 1, "skipped": 1}
    assert report.exit_code == 1
    ok = Report(apps=[AppReport(app="a", checks=[CheckResult("x", "x", status="warning")])])
    assert ok.passed
    assert ok.exit_code == 0


def test_text_summary_names_the_fault_and_the_repro() -> None:
    text = sample().render()
    assert "falemu check: greeter (http://127.0.0.1:8787/local/greeter)" in text
    assert "✘ fuzz.not_a_server_error" in text
    assert "POST /double: Server error" in text
    assert "reproduce: curl -X POST" in text
    assert "advice: raise keep_alive" in text
    assert text.splitlines()[-1] == "FAILED: 1 passed, 1 failed, 1 warning, 1 skipped"


def test_json_roundtrips() -> None:
    data = json.loads(json.dumps(sample().to_dict()))
    assert data["passed"] is False
    checks = {c["name"]: c for c in data["apps"][0]["checks"]}
    assert checks["fuzz.not_a_server_error"]["findings"][0]["operation"] == "POST /double"


def test_junit_xml_lists_each_check(tmp_path: Path) -> None:
    path = tmp_path / "out" / "falemu.xml"
    write_junit_xml(sample(), path)
    root = ET.parse(path).getroot()
    assert root.tag == "testsuites"
    assert root.get("tests") == "4"
    assert root.get("failures") == "1"
    suite = root.find("testsuite")
    assert suite is not None
    assert suite.get("name") == "falemu check greeter"
    cases = {c.get("name"): c for c in suite.findall("testcase")}
    assert list(cases) == ["openapi.present", "fuzz.not_a_server_error", "keep_alive", "baseline"]
    failure = cases["fuzz.not_a_server_error"].find("failure")
    assert failure is not None
    assert failure.get("message") == "Server error"
    assert "curl -X POST" in (failure.text or "")
    assert cases["baseline"].find("skipped") is not None
    assert cases["openapi.present"].find("failure") is None
    assert Finding("x").to_dict()["message"] == "x"


def test_warnings_are_listed_apart_from_failures_everywhere(tmp_path: Path) -> None:
    report = sample()
    text = report.render()
    lines = text.splitlines()
    start = lines.index("1 warning (not failures; --strict fails them):")
    assert lines[start + 1] == "  ! greeter keep_alive: keep_alive vs cold start"
    assert lines[start + 2] == "    fix: raise keep_alive"
    data = report.to_dict()
    assert [(w["app"], w["name"]) for w in data["warnings"]] == [("greeter", "keep_alive")]
    assert data["strict"] is False
    path = tmp_path / "falemu.xml"
    write_junit_xml(report, path)
    root = ET.parse(path).getroot()
    assert root.get("warnings") == "1"
    assert root.get("failures") == "1"
    case = next(c for c in root.iter("testcase") if c.get("name") == "keep_alive")
    assert case.find("failure") is None
    prop = case.find("properties/property")
    assert prop is not None
    assert (prop.get("name"), prop.get("value")) == ("falemu.status", "warning")
    assert "WARNING" in (case.findtext("system-err") or "")


def test_strict_turns_warnings_into_failures() -> None:
    ok = Report(apps=[AppReport(app="a", checks=[CheckResult("x", "x", status="warning")])])
    assert ok.exit_code == 0
    ok.make_strict()
    assert ok.exit_code == 1
    assert ok.counts()["warning"] == 0
    assert ok.to_dict()["strict"] is True
    assert "failed by --strict" in ok.apps[0].checks[0].advice[-1]
