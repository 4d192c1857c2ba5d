"""The URL half of ``falemu check``: everything that needs only the app's address.

:func:`check_app_url` fetches ``/openapi.json`` through the gateway, validates it, applies fal's rules,
runs schemathesis against the app and diffs the document against a baseline. The Docker half (config,
build, start, timings) lives in :mod:`falemu.contract.lifecycle`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from falemu.contract.diff import diff_openapi, load_baseline
from falemu.contract.fuzz import CHECK_TITLES, CHECKS, run_fuzz
from falemu.contract.openapi import (
    MISSING_OPENAPI,
    MISSING_OPENAPI_HINT,
    count_operations,
    fal_rules,
    fetch_openapi,
    openapi_version,
    validate_document,
)
from falemu.contract.results import AppReport, CheckResult, Finding
from falemu.contract.streaming import reclassify_streaming


@dataclass(frozen=True)
class GateOptions:
    max_examples: int = 50
    seed: int | None = None
    baseline: Path | None = None
    update_baseline: bool = False
    negative: bool = False  # also send invalid input (expects documented 4xx answers)
    checks: Sequence[str] = CHECKS
    request_timeout: float = 60.0
    # Operations the platform adds, not the app's author (a fal.App's GET /health): no fal.schemas finding.
    platform_operations: frozenset[str] = frozenset()


def check_app_url(
    report: AppReport,
    base_url: str,
    *,
    headers: Mapping[str, str] | None = None,
    options: GateOptions | None = None,
) -> dict[str, Any] | None:
    """Add the OpenAPI, fal-rule, schemathesis and baseline checks to ``report``.

    Returns the app's OpenAPI document (None when there is none) so a caller can record a baseline.
    """
    options = options or GateOptions()
    with httpx.Client(headers=dict(headers or {}), timeout=options.request_timeout) as client:
        started = time.monotonic()
        present = report.add(CheckResult("openapi.present", "GET /openapi.json answers with a document"))
        fetched = fetch_openapi(client, base_url)
        present.seconds = time.monotonic() - started
    document = fetched.document
    if document is None:
        present.fail(fetched.problem or MISSING_OPENAPI)
        if fetched.status_code == 404:
            present.advice.append(MISSING_OPENAPI_HINT)
        for name, title in _dependent_checks(options):
            report.add(CheckResult(name, title).skip("no OpenAPI document"))
        return None
    count = count_operations(document)
    present.summary = f"OpenAPI {openapi_version(document) or '?'}, {count} operation{'' if count == 1 else 's'}"

    started = time.monotonic()
    valid = report.add(CheckResult("openapi.valid", "the document is valid OpenAPI 3.0/3.1"))
    for finding in validate_document(document):
        valid.fail(finding.message, detail=finding.detail)
    valid.seconds = time.monotonic() - started

    rules = report.add(CheckResult("fal.schemas", "every operation has request and response schemas"))
    for finding in fal_rules(document):
        if finding.operation in options.platform_operations:
            continue
        rules.status = "failed"
        rules.findings.append(finding)

    if valid.failed:
        for name in options.checks:
            report.add(CheckResult(f"fuzz.{name}", CHECK_TITLES.get(name, name)).skip("the document is not valid"))
    else:
        _fuzz(report, document, base_url, headers, options)
        reclassify_streaming(report, document)

    if options.baseline is not None:
        report.add(_baseline_check(report.app, document, options))
    return document


def _dependent_checks(options: GateOptions) -> list[tuple[str, str]]:
    names = [
        ("openapi.valid", "the document is valid OpenAPI 3.0/3.1"),
        ("fal.schemas", "every operation has request and response schemas"),
    ]
    names += [(f"fuzz.{n}", CHECK_TITLES.get(n, n)) for n in options.checks]
    if options.baseline is not None:
        names.append(("baseline", "no breaking change against the baseline"))
    return names


def _fuzz(
    report: AppReport,
    document: dict[str, Any],
    base_url: str,
    headers: Mapping[str, str] | None,
    options: GateOptions,
) -> None:
    outcome = run_fuzz(
        document,
        base_url,
        headers=headers,
        max_examples=options.max_examples,
        seed=options.seed,
        checks=options.checks,
        negative=options.negative,
        request_timeout=options.request_timeout,
    )
    seed = f", seed {options.seed}" if options.seed is not None else ""
    count = len(outcome.operations)
    summary = f"{outcome.cases} cases over {count} operation{'' if count == 1 else 's'}{seed}"
    per_check = outcome.seconds / max(1, len(options.checks))
    for name in options.checks:
        check = report.add(CheckResult(f"fuzz.{name}", CHECK_TITLES.get(name, name), summary=summary))
        check.seconds = per_check
        findings = outcome.findings.get(name, [])
        if findings:
            check.status = "failed"
            check.findings.extend(findings)
        elif outcome.errors and outcome.cases == 0:
            check.status = "failed"
            check.findings.extend(Finding(error) for error in outcome.errors[:5])
    if outcome.errors and outcome.cases:
        errors = report.add(CheckResult("fuzz.run", "schemathesis ran without errors"))
        errors.status = "warning"
        errors.findings.extend(Finding(error) for error in outcome.errors[:10])


def _baseline_check(app: str, document: dict[str, Any], options: GateOptions) -> CheckResult:
    assert options.baseline is not None
    check = CheckResult("baseline", "no breaking change against the baseline")
    started = time.monotonic()
    if options.update_baseline:
        check.summary = f"recording the current document in {options.baseline}"
        return check
    old = load_baseline(options.baseline, app)
    if old is None:
        check.fail(f"no baseline for {app} in {options.baseline}")
        check.advice.append("record one with `falemu check --baseline FILE --update-baseline` and commit it")
        return check
    changes = diff_openapi(old, document)
    for change in changes:
        check.fail(change.message, operation=change.operation, detail=f"{change.kind} at {change.location}")
    check.summary = f"{len(changes)} breaking changes against {options.baseline}"
    check.seconds = time.monotonic() - started
    return check
