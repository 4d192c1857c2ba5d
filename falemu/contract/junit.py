"""JUnit XML for CI test reports: one ``<testsuite>`` per app, one ``<testcase>`` per check."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from falemu.contract.results import CheckResult, Report


def _failure_text(check: CheckResult) -> str:
    lines: list[str] = []
    for finding in check.findings:
        op = f"{finding.operation}: " if finding.operation else ""
        lines.append(f"{op}{finding.message}")
        if finding.detail:
            lines.extend("    " + line for line in finding.detail.splitlines())
        if finding.repro:
            lines.append(f"    reproduce: {finding.repro}")
    lines.extend(f"advice: {a}" for a in check.advice)
    return "\n".join(lines)


def to_junit_xml(report: Report) -> ET.ElementTree[ET.Element]:
    counts = report.counts()
    root = ET.Element(
        "testsuites",
        name="falemu check",
        tests=str(sum(counts.values())),
        failures=str(counts["failed"]),
        skipped=str(counts["skipped"]),
        errors="0",
        warnings=str(counts["warning"]),  # not a JUnit status: listed apart, as <system-err> of each case
    )
    for app in report.apps:
        suite = ET.SubElement(
            root,
            "testsuite",
            name=f"falemu check {app.app}",
            tests=str(len(app.checks)),
            failures=str(sum(1 for c in app.checks if c.status == "failed")),
            skipped=str(sum(1 for c in app.checks if c.status == "skipped")),
            errors="0",
            time=f"{app.seconds:.3f}",
        )
        for check in app.checks:
            case = ET.SubElement(
                suite, "testcase", classname=f"falemu.{app.app}", name=check.name, time=f"{check.seconds:.3f}"
            )
            if check.status == "failed":
                first = check.findings[0].message if check.findings else check.summary
                failure = ET.SubElement(case, "failure", message=first, type=check.name)
                failure.text = _failure_text(check)
            elif check.status == "skipped":
                ET.SubElement(case, "skipped", message=check.summary or "skipped")
            out = [check.title + (f": {check.summary}" if check.summary else "")]
            ET.SubElement(case, "system-out").text = "\n".join(x for x in out if x)
            if check.status == "warning":
                properties = ET.Element("properties")
                ET.SubElement(properties, "property", name="falemu.status", value="warning")
                case.insert(0, properties)
                ET.SubElement(case, "system-err").text = "WARNING (passes; --strict fails it)\n" + _failure_text(check)
    ET.indent(root)
    return ET.ElementTree(root)


def write_junit_xml(report: Report, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    to_junit_xml(report).write(path, encoding="utf-8", xml_declaration=True)
