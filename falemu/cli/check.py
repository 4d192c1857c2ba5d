"""``falemu check [APP ...]``: the pre-deploy contract gate for CI.

Exit 0 when every check passes (warnings included, unless ``--strict``), 1 on violations, 2 when the
pyproject is not what ``fal deploy`` accepts.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from falemu.cli.options import NO_APPS_HINT, examples, gpu_option, load_for, project_option, runtime_option

if TYPE_CHECKING:
    from falemu.contract.results import Report


@click.command(
    "check",
    epilog=examples(
        ("falemu check", "every app of the project; exit 0 pass, 1 violations, 2 config, Dockerfile or ref error"),
        ("falemu check greeter --seed 1", "one app, reproducible generated cases"),
        ("falemu check app.py::MyApp", "a fal.App class, loaded as `fal run` loads it"),
        ("falemu check --baseline openapi.json", "also fail on breaking API changes"),
        ("falemu check --junit-xml report.xml", "a report for CI"),
        ("falemu check --strict", "warnings fail too"),
    ),
)
@click.argument("apps", nargs=-1)
@project_option
@click.option(
    "--max-examples",
    type=click.IntRange(min=1),
    default=50,
    show_default=True,
    help="Generated test cases per operation and phase (schemathesis).",
)
@click.option("--seed", type=int, default=None, help="Seed for the generated cases, to reproduce a run.")
@runtime_option
@gpu_option
@click.option(
    "--baseline",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Committed OpenAPI baseline: fail on breaking changes against it.",
)
@click.option("--update-baseline", is_flag=True, help="Write the current documents to --baseline instead of diffing.")
@click.option(
    "--negative", is_flag=True, help="Also send invalid input (then every 4xx the app answers must be documented)."
)
@click.option(
    "--junit-xml",
    "junit_xml",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write a JUnit XML report (one test case per check) for CI.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON instead of the summary.")
@click.option("--strict", is_flag=True, help="Fail on warnings too (they are listed apart from failures otherwise).")
@click.option("-v", "--verbose", is_flag=True, help="Show every finding (the summary shows the first ten per check).")
def check(
    apps: tuple[str, ...],
    project: Path | None,
    max_examples: int,
    seed: int | None,
    runtime_name: str | None,
    gpu: str | None,
    baseline: Path | None,
    update_baseline: bool,
    negative: bool,
    junit_xml: Path | None,
    as_json: bool,
    strict: bool,
    verbose: bool,
) -> None:
    """Build and start each app, then check what fal needs before a deploy.

    Checks the pyproject, the build, that the server listens on 0.0.0.0, /openapi.json (present, valid
    OpenAPI 3.0/3.1, request and response schemas on every operation), a schemathesis run through the
    gateway, start-up time against startup_timeout, cold start against keep_alive and, with --baseline,
    breaking changes. Without APP, every app of the project; APP is an app name of the pyproject or a
    fal.App ref, path/to/app.py::ClassName. Warnings (a streaming endpoint documented as JSON, keep_alive
    shorter than a cold start...) are listed apart and pass, unless --strict.
    """
    from falemu.config import project_settings
    from falemu.contract.diff import write_baseline
    from falemu.contract.gate import GateOptions
    from falemu.contract.lifecycle import check_app, config_report
    from falemu.contract.results import Report
    from falemu.errors import ConfigError, UsageError

    _require_contract_extra()
    if update_baseline and baseline is None:
        raise UsageError("--update-baseline needs --baseline FILE", hint="for example --baseline openapi-baseline.json")
    loaded = load_for(project, apps)
    names = list(apps) or list(loaded.app_names)
    if not names:
        raise ConfigError(f"{loaded.pyproject} declares no [tool.fal.apps.<name>] table", hint=NO_APPS_HINT)
    settings = project_settings(
        loaded, cli={"port": 0, "host": "127.0.0.1", "tls": False, "runtime": runtime_name, "gpu": gpu}
    )
    options = GateOptions(
        max_examples=max_examples, seed=seed, baseline=baseline, update_baseline=update_baseline, negative=negative
    )

    _quiet_probe_warnings()

    def progress(message: str) -> None:
        click.echo(message, err=True)

    reports, parsed = config_report(loaded, names)
    report = Report(apps=reports)
    broken = [r for r in reports if not r.passed]
    if broken:
        _write(report, junit_xml, as_json, verbose)
        first = broken[0].checks[0].findings[0]
        raise ConfigError(first.message, hint=(first.detail or "").removeprefix("hint: ") or None)

    documents: dict[str, dict[str, object]] = {}
    by_name = {r.app: r for r in reports}
    for app in parsed:
        run = check_app(loaded, settings, app, by_name[app.name], options, progress=progress)
        if run.document is not None:
            documents[app.name] = run.document
    if update_baseline and baseline is not None and documents:
        write_baseline(baseline, documents)
        progress(f"recorded the OpenAPI baseline of {', '.join(documents)} in {baseline}")
    if strict:
        report.make_strict()
    _write(report, junit_xml, as_json, verbose)
    sys.exit(report.exit_code)


def _write(report: Report, junit_xml: Path | None, as_json: bool, verbose: bool) -> None:
    from falemu.contract.junit import write_junit_xml

    if junit_xml is not None:
        write_junit_xml(report, junit_xml)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        click.echo(report.render(verbose=verbose))


class _DropProbeNoise(logging.Filter):
    """schemathesis' probes send deliberately malformed requests; the gateway's server logs each one."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Invalid HTTP request received" not in record.getMessage()


def _quiet_probe_warnings() -> None:
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _DropProbeNoise) for f in logger.filters):
        logger.addFilter(_DropProbeNoise())


def _require_contract_extra() -> None:
    import importlib.util

    from falemu.errors import UsageError

    missing = [m for m in ("schemathesis", "openapi_spec_validator") if importlib.util.find_spec(m) is None]
    if missing:
        raise UsageError(
            f"falemu check needs {', '.join(missing)}, which is not installed",
            hint="pip install 'falemu[contract]'",
        )
