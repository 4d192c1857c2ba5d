"""The whole ``falemu check`` for one app: config, build, start, then the URL checks through the gateway.

Each app runs in its own :class:`~falemu.emulator.Emulator` (gateway on a free port), started warm so
the first runner's start-up is measured and a runner that cannot start fails here, with the runtime's
diagnosis (a server bound to 127.0.0.1 is named as such). The contract checks then go through the
gateway, the path a fal caller's request takes. With ``min_concurrency = 0`` the idle runner is
expired and a new runner is started to measure a real cold start, to compare with ``keep_alive``.

A runner that answers 503 is not ready yet (fal retries 503s): model servers that load weights often
answer their health check with 200 while every other path, ``/openapi.json`` included, is still 503.
Before any check goes through the gateway (which, as fal, replaces a runner that answers 503), the
runner is polled directly, with back-off, until ``/openapi.json`` answers anything but 503 or
``startup_timeout`` runs out; start-up and cold start are measured to that first non-503 answer.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx

from falemu.config.model import AppConfig, Project
from falemu.config.settings import Settings
from falemu.contract.gate import GateOptions, check_app_url
from falemu.contract.results import AppReport, CheckResult, Finding
from falemu.errors import ConfigError, FalemuError, ImageError, RunnerError, StartupTimeout
from falemu.events import Event, EventBus, Notice, RunnerFailed, RunnerReady
from falemu.scaling.policy import SERVING_STATES
from falemu.scaling.pool import RequestStartTimeout

if TYPE_CHECKING:
    from falemu.emulator import Emulator

Progress = Callable[[str], None]

BIND_TITLE = "the server listens on 0.0.0.0 (fal cannot reach 127.0.0.1 inside the container)"
LOADING_PATH = "/openapi.json"  # polled on the runner itself until it answers anything but 503
START_PHASES = ("create", "start", "port_open", "http_ready")
WARN_FRACTION = 0.8  # start-up above this share of startup_timeout is a warning
FAL_APP_ROUTES = frozenset({"GET /health"})  # what fal.App adds to every app


@dataclass
class AppRun:
    """What one app's run observed, besides the report."""

    document: dict[str, Any] | None = None
    startup_seconds: float | None = None
    cold_start_seconds: float | None = None
    loading_seconds: float = 0.0  # how long the ready runner still answered 503
    still_loading: bool = False  # it answered 503 until startup_timeout ran out
    events: list[Event] = field(default_factory=list)


@dataclass(frozen=True)
class LoadWait:
    """How a wait for a runner to stop answering 503 ended."""

    seconds: float
    status: int | None  # the last answer (None: no HTTP answer)
    saw_503: bool

    @property
    def loaded(self) -> bool:
        return self.status is not None and self.status != 503


def wait_while_loading(url: str, budget: float, *, first_delay: float = 0.05, max_delay: float = 1.0) -> LoadWait:
    """GET ``url`` until it answers anything but 503, backing off up to ``max_delay``, for ``budget`` seconds."""
    started = time.monotonic()
    delay = first_delay
    saw_503 = False
    status: int | None = None
    with httpx.Client(timeout=httpx.Timeout(10.0, connect=5.0)) as client:
        while True:
            try:
                status = client.get(url).status_code
            except httpx.HTTPError:
                status = None
            elapsed = time.monotonic() - started
            if status is not None and status != 503:
                return LoadWait(elapsed, status, saw_503)
            saw_503 = saw_503 or status == 503
            if elapsed >= budget:
                return LoadWait(elapsed, status, saw_503)
            time.sleep(min(delay, budget - elapsed))
            delay = min(delay * 2, max_delay)


def _quiet(message: str) -> None:
    """The default progress sink: drops everything."""


def config_report(project: Project, names: Sequence[str]) -> tuple[list[AppReport], list[AppConfig]]:
    """Parse each app as fal would (fal.Apps through fal's loader): a ``config`` check per app, and the
    apps that parsed. ``names`` may hold refs (``app.py::Class``) as well as app names."""
    from falemu.config.falapp import resolve

    reports: list[AppReport] = []
    apps: list[AppConfig] = []
    for name in names:
        report = AppReport(app=name)
        check = report.add(CheckResult("config", "[tool.fal.apps] table as `fal deploy` reads it"))
        try:
            app = resolve(project, name)
        except ConfigError as exc:
            check.fail(exc.message, detail=f"hint: {exc.hint}" if exc.hint else "")
        else:
            apps.append(app)
            check.summary = f"{app.shape.value}, port {app.exposed_port or 8080}, auth {app.effective_auth}"
            if app.fal_app is not None:
                check.summary += f", {app.fal_app.file.name}::{app.fal_app.class_name}"
            check.advice.extend(app.warnings)
        reports.append(report)
    return reports, apps


def check_app(
    project: Project,
    settings: Settings,
    app: AppConfig,
    report: AppReport,
    options: GateOptions,
    *,
    progress: Progress = _quiet,
    emulator_factory: Callable[..., Emulator] | None = None,
) -> AppRun:
    """Build, start and check ``app``; adds every check to ``report`` and never raises for app faults."""
    run = AppRun()
    bus = EventBus()
    bus.subscribe(run.events.append)

    def warn(event: Event) -> None:  # as they come, as `falemu up` prints them: a long wait is not a silent one
        if isinstance(event, Notice) and event.level == "warning":
            about = f"{event.app}: " if event.app and event.app not in event.message else ""
            progress(f"warning: {about}{event.message}")

    bus.subscribe(warn, kinds=[Notice])
    if emulator_factory is None:
        from falemu.emulator import Emulator

        emulator_factory = Emulator
    kwargs: dict[str, Any] = {"preloaded": [app]} if app.fal_app is not None else {}
    emu = emulator_factory(project, settings, apps=[app.name], events=bus, warm=True, **kwargs)
    build = report.add(CheckResult("build", "the image builds"))
    start = report.add(CheckResult("start", "a runner starts and becomes ready"))
    bind = report.add(CheckResult("bind", BIND_TITLE))
    progress(f"{app.name}: building and starting (startup_timeout {app.scaling.startup_timeout} s)")
    started = time.monotonic()
    try:
        emu.start()
    except ImageError as exc:
        report.project_error = exc.exit_code == 2  # the Dockerfile, not the engine or the network
        build.fail(exc.message, detail=f"hint: {exc.hint}" if exc.hint else "")
        build.seconds = time.monotonic() - started
        for check in (start, bind):
            check.skip("the image did not build")
        _skip_rest(report, options, "the image did not build")
        return run
    except RunnerError as exc:
        _record_build(emu, app, build)
        start.seconds = time.monotonic() - started - build.seconds
        _start_failed(app, exc, start, bind, report, options, run)
        return run
    except FalemuError as exc:  # no engine, no GPU under --gpu require, a port in use, a missing ref file...
        report.project_error = exc.exit_code == 2
        emu.stop()
        _record_build(emu, app, build)
        start.fail(exc.message, detail=f"hint: {exc.hint}" if exc.hint else "")
        bind.skip("no runner started")
        _skip_rest(report, options, "no runner started")
        report.add(CheckResult("startup_time", "start-up within startup_timeout").skip("no runner started"))
        report.add(CheckResult("cold_start", "keep_alive vs cold start").skip("no runner started"))
        return run
    try:
        _record_build(emu, app, build)
        ready = [e for e in run.events if isinstance(e, RunnerReady)]
        if ready:
            run.startup_seconds = sum(ready[0].timeline.get(phase, 0.0) for phase in START_PHASES)
        _wait_for_load(emu, app, run, progress)
        start.seconds = time.monotonic() - started - build.seconds
        start.summary = (
            f"ready in {run.startup_seconds:.2f} s" if run.startup_seconds is not None else "ready"
        ) + f" ({len(emu.runners(app.name))} runner(s))"
        if run.loading_seconds:
            start.summary += f"; it answered 503 (loading) for {run.loading_seconds:.2f} s of that"
        bind.summary = "the gateway reaches the runner"
        url = emu.app_url(app.name)
        report.url = url
        # Public apps are called without a key, as their callers would.
        private = app.effective_auth != "public"
        headers = {"Authorization": f"Key {emu.api_key}"} if emu.api_key and private else {}
        progress(f"{app.name}: checking the contract at {url}")
        if app.fal_app is not None:  # fal's own GET /health ({"version": ...}) is not the author's to type
            options = dataclasses.replace(options, platform_operations=options.platform_operations | FAL_APP_ROUTES)
        run.document = check_app_url(report, url, headers=headers, options=options)
        report.add(_startup_check(app, run.startup_seconds, still_loading=run.still_loading))
        report.add(_cold_start_check(emu, app, run))
    finally:
        emu.stop()
    return run


def _wait_for_load(emu: Emulator, app: AppConfig, run: AppRun, progress: Progress) -> None:
    """Poll the first runner directly until it stops answering 503; the wait counts toward start-up."""
    urls = [r.url for r in emu.runners(app.name) if r.url and r.state in SERVING_STATES]
    if not urls:
        return
    budget = max(0.0, float(app.scaling.startup_timeout) - (run.startup_seconds or 0.0))
    first = wait_while_loading(urls[0] + LOADING_PATH, min(0.0, budget))  # one look, no waiting
    if first.loaded or first.status is None:
        return
    progress(f"{app.name}: the runner answers 503 (still loading); waiting up to {budget:.0f} s for it")
    waited = wait_while_loading(urls[0] + LOADING_PATH, budget)
    run.loading_seconds = first.seconds + waited.seconds
    run.still_loading = not waited.loaded
    if run.startup_seconds is not None:
        run.startup_seconds += run.loading_seconds


def _record_build(emu: Emulator, app: AppConfig, build: CheckResult) -> None:
    prepared = emu.prepared.get(app.name)
    if prepared is None:
        return
    build.seconds = prepared.build_seconds
    image = prepared.image or ""
    if image.startswith("sha256:"):
        image = image.removeprefix("sha256:")[:12]
    build.summary = ("built" if prepared.built else "reused") + (f" {image}" if image else "")
    if prepared.built:
        build.summary += f" in {prepared.build_seconds:.1f} s"


def _start_failed(
    app: AppConfig,
    exc: RunnerError,
    start: CheckResult,
    bind: CheckResult,
    report: AppReport,
    options: GateOptions,
    run: AppRun,
) -> None:
    text = f"{exc.message} {exc.hint or ''}"
    logs = exc.logs.strip().splitlines()[-10:]
    detail = "\n".join(["last log lines:", *logs]) if logs else ""
    if "0.0.0.0" in text:
        bind.fail(exc.message, detail=detail)
        bind.advice.append(exc.hint or "bind the server to 0.0.0.0 (for example uvicorn --host 0.0.0.0)")
        start.fail("no runner became ready: the server is not reachable on its exposed port")
    else:
        start.fail(exc.message, detail=detail)
        if exc.hint:
            start.advice.append(exc.hint)
        bind.skip("no runner started")
    failed = [e for e in run.events if isinstance(e, RunnerFailed)]
    if failed and failed[-1].message != exc.message:
        start.findings.append(Finding(failed[-1].message))
    _skip_rest(report, options, "no runner started")
    startup = report.add(
        CheckResult("startup_time", f"start-up within startup_timeout ({app.scaling.startup_timeout} s)")
    )
    if isinstance(exc, StartupTimeout):
        startup.fail(exc.message)
    else:
        startup.skip("no runner started")
    report.add(CheckResult("cold_start", "keep_alive vs cold start").skip("no runner started"))


def _skip_rest(report: AppReport, options: GateOptions, reason: str) -> None:
    from falemu.contract.fuzz import CHECK_TITLES

    names = [
        ("openapi.present", "GET /openapi.json answers with a document"),
        ("openapi.valid", "the document is valid OpenAPI 3.0/3.1"),
        ("fal.schemas", "every operation has request and response schemas"),
        *[(f"fuzz.{n}", CHECK_TITLES.get(n, n)) for n in options.checks],
    ]
    if options.baseline is not None:
        names.append(("baseline", "no breaking change against the baseline"))
    for name, title in names:
        report.add(CheckResult(name, title).skip(reason))


def _startup_check(app: AppConfig, seconds: float | None, *, still_loading: bool = False) -> CheckResult:
    limit = float(app.scaling.startup_timeout)
    check = CheckResult("startup_time", f"start-up within startup_timeout ({limit:g} s)")
    if seconds is None:
        return check.skip("no start-up was measured")
    check.summary = f"{seconds:.2f} s of {limit:g} s"
    if still_loading:
        check.fail(
            f"the runner still answered 503 to GET {LOADING_PATH} when startup_timeout ({limit:g} s) ran out: "
            "it never finished loading"
        )
        check.advice.append("raise startup_timeout, or make the server load faster")
    elif seconds > limit:
        check.fail(f"the runner took {seconds:.1f} s to become ready; startup_timeout is {limit:g} s")
        check.advice.append("raise startup_timeout, or move work out of start-up")
    elif seconds > WARN_FRACTION * limit:
        check.status = "warning"
        check.advice.append(
            f"start-up uses {seconds / limit:.0%} of startup_timeout: a slower machine would hit it; "
            "raise startup_timeout"
        )
    return check


def _cold_start_check(emu: Emulator, app: AppConfig, run: AppRun) -> CheckResult:
    keep_alive = app.scaling.keep_alive
    check = CheckResult("cold_start", f"keep_alive ({keep_alive} s) vs cold start")
    cold: float | None = None
    how = "measured"
    if app.scaling.min_concurrency == 0:
        cold = _measure_cold_start(emu, app)
    if cold is None:
        cold, how = run.startup_seconds, "runner start-up"
    if cold is None:
        return check.skip("no cold start was measured")
    run.cold_start_seconds = cold
    check.summary = f"cold start {cold:.2f} s ({how}), keep_alive {keep_alive} s"
    if keep_alive < cold:
        check.status = "warning"
        check.advice.append(
            f"keep_alive ({keep_alive} s) is shorter than a cold start ({cold:.1f} s): idle runners stop before "
            "they pay for their start; raise keep_alive or set min_concurrency = 1"
        )
    return check


def _measure_cold_start(emu: Emulator, app: AppConfig) -> float | None:
    """Expire the idle runner, start a new one through the app's pool and time it to its first non-503 answer.

    The runner is leased straight from the pool rather than through a gateway request: a request the
    runner answers 503 (still loading) would make the gateway replace it, as fal does.
    """
    limit = float(app.scaling.startup_timeout)
    try:
        emu.expire_idle(app.name)
        pool = emu.pool(app.name)
        started = time.monotonic()
        lease = emu.call(pool.acquire("falemu-check-cold-start", start_timeout=limit + 30), timeout=limit + 60)
        try:
            wait_while_loading(lease.runner.url + LOADING_PATH, limit)
        finally:
            emu.call(pool.release(lease), timeout=30)
        return time.monotonic() - started
    except (FalemuError, RequestStartTimeout, TimeoutError):
        return None
