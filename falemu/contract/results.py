"""What ``falemu check`` found: checks, their findings, and the report that renders them.

Each check has a stable ``name`` (``openapi.valid``, ``fuzz.not_a_server_error`` ...): it is the JUnit
test case name and the JSON key, so CI dashboards can track a check across runs.

A *warning* is something fal accepts that deserves a look (a streaming endpoint documented as JSON, a
keep_alive shorter than a cold start): it does not fail the gate, and every output lists warnings apart
from failures. :meth:`Report.make_strict` (``falemu check --strict``) turns them into failures.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

Status = Literal["passed", "failed", "warning", "skipped"]

_MARKS: dict[Status, str] = {"passed": "✔", "failed": "✘", "warning": "!", "skipped": "-"}


@dataclass
class Finding:
    """One problem a check found."""

    message: str  # one line
    detail: str = ""  # more lines: the received response, the validator's path, ...
    operation: str | None = None  # "POST /greet"
    repro: str | None = None  # a command that reproduces it (curl)

    def to_dict(self) -> dict[str, Any]:
        return {"message": self.message, "detail": self.detail, "operation": self.operation, "repro": self.repro}


@dataclass
class CheckResult:
    name: str  # stable id, e.g. "openapi.present"
    title: str  # what the check verifies, for people
    status: Status = "passed"
    summary: str = ""  # one line on what was seen ("OpenAPI 3.1.0, 2 operations")
    findings: list[Finding] = field(default_factory=list)
    advice: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failed(self) -> bool:
        return self.status == "failed"

    def fail(self, message: str, **kwargs: Any) -> CheckResult:
        self.status = "failed"
        self.findings.append(Finding(message, **kwargs))
        return self

    def skip(self, reason: str) -> CheckResult:
        self.status = "skipped"
        self.summary = reason
        return self

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "status": self.status,
            "summary": self.summary,
            "findings": [f.to_dict() for f in self.findings],
            "advice": list(self.advice),
            "seconds": round(self.seconds, 3),
        }


@dataclass
class AppReport:
    app: str
    url: str | None = None
    checks: list[CheckResult] = field(default_factory=list)
    project_error: bool = False  # the app could not be built or started for a mistake in the project (exit 2)

    def add(self, check: CheckResult) -> CheckResult:
        self.checks.append(check)
        return check

    def get(self, name: str) -> CheckResult | None:
        return next((c for c in self.checks if c.name == name), None)

    @property
    def passed(self) -> bool:
        return not any(c.failed for c in self.checks)

    @property
    def seconds(self) -> float:
        return sum(c.seconds for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {
            "app": self.app,
            "url": self.url,
            "passed": self.passed,
            "checks": [c.to_dict() for c in self.checks],
        }


@dataclass
class Report:
    apps: list[AppReport] = field(default_factory=list)
    strict: bool = False  # warnings were turned into failures

    def make_strict(self) -> None:
        """``--strict``: every warning becomes a failure (its findings and advice kept)."""
        self.strict = True
        for app in self.apps:
            for check in app.checks:
                if check.status == "warning":
                    check.status = "failed"
                    check.advice.append("a warning, failed by --strict")

    def warnings(self) -> list[tuple[str, CheckResult]]:
        """(app, check) of every check that ended as a warning."""
        return [(app.app, check) for app in self.apps for check in app.checks if check.status == "warning"]

    @property
    def passed(self) -> bool:
        return all(a.passed for a in self.apps)

    @property
    def exit_code(self) -> int:
        """0 passed, 1 contract violations, 2 a mistake in the project (config, Dockerfile, ref)."""
        if any(a.project_error for a in self.apps):
            return 2
        return 0 if self.passed else 1

    def counts(self) -> dict[Status, int]:
        counts: dict[Status, int] = {"passed": 0, "failed": 0, "warning": 0, "skipped": 0}
        for app in self.apps:
            for check in app.checks:
                counts[check.status] += 1
        return counts

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "strict": self.strict,
            "counts": self.counts(),
            "warnings": [{"app": app, **check.to_dict()} for app, check in self.warnings()],
            "apps": [a.to_dict() for a in self.apps],
        }

    def render(self, *, verbose: bool = False) -> str:
        """The readable summary ``falemu check`` prints."""
        return "\n".join(_render_lines(self, verbose=verbose))


def _indent(text: str, prefix: str) -> Iterable[str]:
    for line in text.splitlines():
        yield prefix + line


def _render_lines(report: Report, *, verbose: bool) -> Iterable[str]:
    for app in report.apps:
        where = f" ({app.url})" if app.url else ""
        yield f"falemu check: {app.app}{where}"
        for check in app.checks:
            summary = f": {check.summary}" if check.summary else ""
            yield f"  {_MARKS[check.status]} {check.name:<34} {check.title}{summary}"
            shown = check.findings if verbose else check.findings[:10]
            for finding in shown:
                op = f"{finding.operation}: " if finding.operation else ""
                yield f"      - {op}{finding.message}"
                if finding.detail:
                    yield from _indent(finding.detail, "        ")
                if finding.repro:
                    yield f"        reproduce: {finding.repro}"
            if len(shown) < len(check.findings):
                yield f"      ... and {len(check.findings) - len(shown)} more (use --json for all)"
            for advice in check.advice:
                yield f"      advice: {advice}"
        yield ""
    warnings = report.warnings()
    if warnings:
        count = len(warnings)
        yield f"{count} warning{'' if count == 1 else 's'} (not failures; --strict fails them):"
        for app_name, check in warnings:
            first = check.findings[0] if check.findings else None
            what = (f"{first.operation}: " if first and first.operation else "") + (
                first.message if first else check.summary or check.title
            )
            yield f"  ! {app_name} {check.name}: {what}"
            if check.advice:
                yield f"    fix: {check.advice[0]}"
        yield ""
    counts = report.counts()
    verdict = "PASSED" if report.passed else "FAILED"
    parts = ", ".join(f"{n} {status}" for status, n in counts.items() if n)
    yield f"{verdict}: {parts}"
