"""The pre-deploy contract gate behind ``falemu check``.

- :mod:`~falemu.contract.openapi`: fetch and validate ``/openapi.json``, fal's schema rules;
- :mod:`~falemu.contract.fuzz`: schemathesis against the running app (imported only when it runs);
- :mod:`~falemu.contract.diff`: breaking changes against a committed baseline;
- :mod:`~falemu.contract.results` and :mod:`~falemu.contract.junit`: the report, as text, JSON and JUnit XML;
- :mod:`~falemu.contract.gate`: the checks that need only the app's URL.
"""

from __future__ import annotations

from falemu.contract.results import AppReport, CheckResult, Finding, Report

__all__ = ["AppReport", "CheckResult", "Finding", "Report"]
