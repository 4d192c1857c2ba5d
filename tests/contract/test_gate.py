"""The URL half of `falemu check` against real apps on real sockets."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from falemu.contract.gate import GateOptions, check_app_url
from falemu.contract.openapi import MISSING_OPENAPI
from falemu.contract.results import AppReport, Report

from . import apps

Served = Callable[[Any], str]
FAST = GateOptions(max_examples=15, seed=1)


def run(url: str, options: GateOptions = FAST) -> AppReport:
    report = AppReport(app="t", url=url)
    check_app_url(report, url, options=options)
    return report


def status(report: AppReport) -> dict[str, str]:
    return {c.name: c.status for c in report.checks}


def test_good_app_passes_every_check(served: Served) -> None:
    report = run(served(apps.good_app()))
    assert report.passed, report.checks
    assert status(report) == {
        "openapi.present": "passed",
        "openapi.valid": "passed",
        "fal.schemas": "passed",
        "fuzz.not_a_server_error": "passed",
        "fuzz.status_code_conformance": "passed",
        "fuzz.content_type_conformance": "passed",
        "fuzz.response_schema_conformance": "passed",
        "fuzz.response_headers_conformance": "passed",
    }
    fuzz = report.get("fuzz.not_a_server_error")
    assert fuzz is not None
    assert "POST /greet" not in fuzz.summary
    assert "over 1 operation" in fuzz.summary


def test_response_breaking_its_schema_fails_schema_conformance(served: Served) -> None:
    report = run(served(apps.schema_breaking_app()))
    check = report.get("fuzz.response_schema_conformance")
    assert check is not None
    assert check.status == "failed"
    finding = check.findings[0]
    assert finding.operation == "POST /greet"
    assert finding.repro is not None
    assert finding.repro.startswith("curl -X POST")
    assert "/greet" in finding.repro
    assert not report.passed


def test_server_error_on_generated_input_is_found_with_a_curl_repro(served: Served) -> None:
    url = served(apps.server_error_app())
    report = run(url)
    check = report.get("fuzz.not_a_server_error")
    assert check is not None
    assert check.status == "failed"
    assert check.findings[0].operation == "POST /double"
    assert check.findings[0].repro is not None
    assert f"{url}/double" in check.findings[0].repro
    # the repro really reproduces it
    import shlex

    parts = shlex.split(check.findings[0].repro)
    body = parts[parts.index("-d") + 1]
    import httpx

    assert httpx.post(f"{url}/double", content=body, headers={"content-type": "application/json"}).status_code == 500


def test_missing_openapi_fails_and_skips_the_rest(served: Served) -> None:
    report = run(served(apps.no_openapi_app()))
    present = report.get("openapi.present")
    assert present is not None
    assert present.status == "failed"
    assert present.findings[0].message == MISSING_OPENAPI
    assert present.advice
    assert "/openapi.json" in present.advice[0]
    assert all(c.status == "skipped" for c in report.checks[1:])
    assert len(report.checks) == 8


def test_invalid_document_fails_validation_and_skips_fuzzing(served: Served) -> None:
    report = run(served(apps.invalid_document_app()))
    valid = report.get("openapi.valid")
    assert valid is not None
    assert valid.status == "failed"
    assert any("description" in f.message for f in valid.findings)
    assert report.get("fuzz.not_a_server_error").status == "skipped"  # type: ignore[union-attr]


def test_untyped_response_fails_fal_rules(served: Served) -> None:
    report = run(served(apps.untyped_app()))
    rules = report.get("fal.schemas")
    assert rules is not None
    assert rules.status == "failed"
    assert rules.findings[0].operation == "POST /greet"
    assert "response 200" in rules.findings[0].message


def test_undocumented_status_code(served: Served) -> None:
    report = run(served(apps.teapot_app()))
    check = report.get("fuzz.status_code_conformance")
    assert check is not None
    assert check.status == "failed"
    assert "418" in check.findings[0].detail


def test_unreachable_app_fails_present(served: Served) -> None:
    report = run("http://127.0.0.1:9")
    assert report.get("openapi.present").status == "failed"  # type: ignore[union-attr]
    assert "ConnectError" in report.checks[0].findings[0].message


def test_auth_headers_reach_the_app(served: Served) -> None:
    from fastapi import FastAPI, Header, HTTPException

    app = FastAPI()

    @app.middleware("http")
    async def need_key(request: Any, call_next: Any) -> Any:
        if request.headers.get("authorization") != "Key a:b":
            from fastapi.responses import JSONResponse

            return JSONResponse({"detail": "No user found for Key ID and Secret"}, status_code=401)
        return await call_next(request)

    @app.get("/ping")
    def ping(x: str | None = Header(default=None)) -> dict[str, str]:
        if x == "boom":
            raise HTTPException(500)
        return {"ok": "yes"}

    url = served(app)
    report = AppReport(app="t")
    check_app_url(report, url, headers={"Authorization": "Key a:b"}, options=FAST)
    assert report.get("openapi.present").status == "passed"  # type: ignore[union-attr]


def test_baseline_roundtrip_and_removed_field(served: Served, tmp_path: Path) -> None:
    from falemu.contract.diff import write_baseline

    baseline = tmp_path / "openapi-baseline.json"
    url = served(apps.good_app())
    report = AppReport(app="t")
    doc = check_app_url(report, url, options=GateOptions(max_examples=5, baseline=baseline, update_baseline=True))
    assert doc is not None
    write_baseline(baseline, {"t": doc})
    # same app against its own baseline: no change
    again = run(url, GateOptions(max_examples=5, baseline=baseline))
    assert again.get("baseline").status == "passed"  # type: ignore[union-attr]
    report = run(served(apps.slim_app()), GateOptions(max_examples=5, baseline=baseline))
    check = report.get("baseline")
    assert check is not None
    assert check.status == "failed"
    assert any("'length'" in f.message and f.operation == "POST /greet" for f in check.findings)


def test_missing_baseline_fails_with_advice(served: Served, tmp_path: Path) -> None:
    report = run(served(apps.good_app()), GateOptions(max_examples=5, baseline=tmp_path / "nope.json"))
    check = report.get("baseline")
    assert check is not None
    assert check.status == "failed"
    assert "--update-baseline" in check.advice[0]


def test_sse_documented_as_fastapi_does_by_default_is_one_warning_naming_the_fix(served: Served) -> None:
    report = run(served(apps.sse_app(documented=False)))
    assert report.passed, [(c.name, c.status, c.findings) for c in report.checks]
    checks = status(report)
    assert checks["fal.schemas"] == "passed"
    assert checks["fuzz.content_type_conformance"] == "passed"
    warning = report.get("fal.streaming")
    assert warning is not None
    assert warning.status == "warning"
    assert [f.operation for f in warning.findings] == ["POST /stream"]
    assert '"text/event-stream"' in warning.advice[0]
    strict = Report(apps=[report])
    strict.make_strict()
    assert not strict.passed
    assert strict.exit_code == 1


def test_sse_documented_as_a_stream_passes_without_warning(served: Served) -> None:
    report = run(served(apps.sse_app(documented=True)))
    assert report.passed, [(c.name, c.status, c.findings) for c in report.checks]
    assert report.get("fal.streaming") is None
    assert all(c.status == "passed" for c in report.checks), [(c.name, c.status) for c in report.checks]
