"""Property-based checks of a running app against its own OpenAPI document (schemathesis).

The engine runs schemathesis' examples, coverage and fuzzing phases against ``base_url``: for
``falemu check`` that is the app's URL on the gateway, so requests take the same path a fal caller's do.
Findings are grouped per check and deduplicated per operation and kind of failure, each with a curl
command that reproduces it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from falemu.contract.results import Finding

CHECKS: tuple[str, ...] = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "response_headers_conformance",
)

CHECK_TITLES: dict[str, str] = {
    "not_a_server_error": "no 5xx response to valid input",
    "status_code_conformance": "every status code is documented",
    "content_type_conformance": "every content type is documented",
    "response_schema_conformance": "every response body matches its schema",
    "response_headers_conformance": "documented response headers are present and valid",
}


@dataclass
class FuzzOutcome:
    findings: dict[str, list[Finding]] = field(default_factory=lambda: {name: [] for name in CHECKS})
    errors: list[str] = field(default_factory=list)  # the run itself had problems (schema, connection)
    operations: set[str] = field(default_factory=set)
    cases: int = 0
    seconds: float = 0.0
    seed: int | None = None


def run_fuzz(
    document: dict[str, Any],
    base_url: str,
    *,
    headers: Mapping[str, str] | None = None,
    max_examples: int = 50,
    seed: int | None = None,
    checks: Sequence[str] = CHECKS,
    negative: bool = False,
    request_timeout: float = 60.0,
) -> FuzzOutcome:
    """Run schemathesis' engine against ``base_url`` using ``document``; never raises for app faults."""
    import schemathesis
    from schemathesis.config import SchemathesisConfig
    from schemathesis.engine import events, from_schema
    from schemathesis.generation import GenerationMode

    outcome = FuzzOutcome(seed=seed)
    started = time.monotonic()
    config = SchemathesisConfig()
    config.update(seed=seed, max_failures=None)
    try:
        schema = schemathesis.openapi.from_dict(document, config=config)
    except Exception as exc:
        outcome.errors.append(f"schemathesis could not load the document: {type(exc).__name__}: {exc}")
        return outcome
    project = schema.config
    project.update(base_url=base_url.rstrip("/"), headers=dict(headers or {}), request_timeout=request_timeout)
    project.checks.update(included_check_names=list(checks))
    modes = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE] if negative else [GenerationMode.POSITIVE]
    project.generation.update(
        modes=modes,
        max_examples=max_examples,
        database="none",
        deterministic=False,
    )
    seen: set[tuple[str, str, str]] = set()
    try:
        for event in from_schema(schema).execute():
            recorder: Any = getattr(event, "recorder", None)
            if isinstance(event, events.ScenarioFinished) and not event.is_test_scenario:
                recorder = None
            if recorder is not None:
                _collect(outcome, recorder, seen, checks)
            if isinstance(event, events.NonFatalError):
                outcome.errors.append(f"{event.label}: {_error_text(event)}")
            elif isinstance(event, events.FatalError):
                outcome.errors.append(f"schemathesis stopped: {type(event.exception).__name__}: {event.exception}")
    except Exception as exc:  # an engine crash must not take falemu check down with a traceback
        outcome.errors.append(f"schemathesis failed: {type(exc).__name__}: {exc}")
    outcome.seconds = time.monotonic() - started
    return outcome


def _error_text(event: Any) -> str:
    try:
        text = str(event.info.format(base_url_is_set=True))
    except Exception:
        text = f"{type(event.value).__name__}: {event.value}"
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return " ".join(lines[:3])


def _collect(outcome: FuzzOutcome, recorder: Any, seen: set[tuple[str, str, str]], checks: Sequence[str]) -> None:
    for node in recorder.cases.values():
        outcome.operations.add(node.value.operation.label)
    outcome.cases += len(recorder.cases)
    for case_id, nodes in recorder.checks.items():
        case_node = recorder.cases.get(case_id)
        for node in nodes:
            info = node.failure_info
            if info is None or node.name not in checks:
                continue
            failure = info.failure
            operation = failure.operation or (case_node.value.operation.label if case_node else recorder.label)
            key = (node.name, operation, failure.title)
            if key in seen:
                continue
            seen.add(key)
            outcome.findings.setdefault(node.name, []).append(
                Finding(
                    message=failure.title,
                    detail=(failure.message or "").strip(),
                    operation=operation,
                    repro=info.code_sample,
                )
            )
