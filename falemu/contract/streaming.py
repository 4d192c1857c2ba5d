"""Streaming endpoints documented the way FastAPI does by default: a warning that names the fix.

A route returning ``StreamingResponse(media_type="text/event-stream")`` is documented by FastAPI as a
200 ``application/json`` response with an empty schema. fal serves such an app fine (its clients read
the stream), but two checks would fail it: ``fal.schemas`` (no response schema) and
``fuzz.content_type_conformance`` (text/event-stream is not the documented type). When the run saw an
operation answer ``text/event-stream`` where the document says ``application/json`` with no schema,
both findings for that operation become one warning, ``fal.streaming``, with the exact fix.
``falemu check --strict`` turns warnings into failures.
"""

from __future__ import annotations

from typing import Any

from falemu.contract.openapi import is_empty_schema, iter_operations, resolve
from falemu.contract.results import AppReport, CheckResult, Finding

EVENT_STREAM = "text/event-stream"
TITLE = "streaming endpoints document text/event-stream"
FASTAPI_FIX = (
    'document the stream on the route: responses={200: {"content": {"text/event-stream": {}}}} '
    '(FastAPI: @app.post("/stream", response_class=StreamingResponse, responses=...)); other frameworks: '
    "declare the 200 response with content type text/event-stream in /openapi.json"
)


def _documented_as_untyped_json(document: dict[str, Any], label: str) -> bool:
    """The operation's 2xx responses are ``application/json`` with no schema, and nothing else."""
    for method, path, operation in iter_operations(document):
        if f"{method} {path}" != label:
            continue
        responses = operation.get("responses")
        if not isinstance(responses, dict):
            return False
        success = [resolve(document, r) for code, r in responses.items() if str(code).startswith("2")]
        media: list[Any] = []
        for response in success:
            content = response.get("content") if isinstance(response, dict) else None
            if not isinstance(content, dict) or list(content) != ["application/json"]:
                return False
            media.append(content["application/json"])
        return bool(media) and all(
            is_empty_schema(document, m.get("schema") if isinstance(m, dict) else None) for m in media
        )
    return False


def streamed_operations(report: AppReport, document: dict[str, Any]) -> list[str]:
    """Operations the run saw answer an event stream where the document says untyped JSON."""
    check = report.get("fuzz.content_type_conformance")
    if check is None:
        return []
    found: list[str] = []
    for finding in check.findings:
        received = finding.detail.partition("Received:")[2].splitlines()[0] if "Received:" in finding.detail else ""
        label = finding.operation or ""
        if EVENT_STREAM in received and label not in found and _documented_as_untyped_json(document, label):
            found.append(label)
    return found


def _drop(check: CheckResult | None, label: str, *, match: str) -> None:
    if check is None:
        return
    check.findings = [f for f in check.findings if not (f.operation == label and match in f.message)]
    if check.status == "failed" and not check.findings:
        check.status = "passed"


def reclassify_streaming(report: AppReport, document: dict[str, Any]) -> CheckResult | None:
    """Turn the two failures of each FastAPI-documented SSE operation into one warning (None if none)."""
    labels = streamed_operations(report, document)
    if not labels:
        return None
    warning = CheckResult("fal.streaming", TITLE, status="warning")
    for label in labels:
        _drop(report.get("fuzz.content_type_conformance"), label, match="Content-Type")
        _drop(report.get("fal.schemas"), label, match="has no schema")
        warning.findings.append(
            Finding(
                "answers text/event-stream, but the document says application/json with no schema "
                "(FastAPI's default for a StreamingResponse): fal's Playground cannot tell it streams",
                operation=label,
            )
        )
    warning.summary = f"{len(labels)} streaming operation{'' if len(labels) == 1 else 's'}"
    warning.advice.append(FASTAPI_FIX)
    return report.add(warning)
