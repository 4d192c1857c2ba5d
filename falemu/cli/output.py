"""All terminal rendering of ``falemu up``, ``ps`` and ``logs``: the only place that prints.

Human output is one line per event, prefixed by the app or the runner id (``[greeter-1a2b] ...``);
``--json`` prints every event as one JSON line (``Event.to_dict()``), plus ``Serving`` lines for the
URLs and endpoints of each app.
"""

from __future__ import annotations

import atexit
import json
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any, TextIO
from urllib.parse import urlsplit

import click

from falemu.events import (
    BuildFinished,
    BuildOutput,
    BuildStarted,
    BuildStep,
    Event,
    FaultApplied,
    FaultEnded,
    FaultStarted,
    Notice,
    QueueResumed,
    QueueStopped,
    ReloadStarted,
    RequestCompleted,
    RequestQueued,
    RequestStarted,
    RolloutFailed,
    RolloutFinished,
    RolloutStarted,
    RunnerFailed,
    RunnerLog,
    RunnerReady,
    RunnerStateChanged,
    RunnerStopped,
    ScaledDown,
    ScaledUp,
)

STATE_COLORS = {
    "PENDING": "yellow",
    "SETUP": "yellow",
    "IDLE": "green",
    "RUNNING": "cyan",
    "DRAINING": "magenta",
    "TERMINATING": "magenta",
    "TERMINATED": "bright_black",
    "FAILURE_DELAY": "red",
}
NO_OPENAPI_WARNING = (
    "{app}: the server has no /openapi.json; on fal the Playground and the endpoint listing will not be "
    "available for this app (serve an OpenAPI document at /openapi.json, as FastAPI does by default)"
)


# Why a runner stopped (policy StopReason values and the emulator's own), as a user reads it.
STOP_REASONS = {
    "keep_alive": "idle for keep_alive seconds",
    "never_served": "no request came since it started, and min_concurrency is 0",
    "above_max_concurrency": "above max_concurrency",
    "shutdown": "falemu up is stopping",
    "exited": "its container or process exited",
    "replaced": "replaced by a fresh runner",
    "rollout": "a newer revision serves now",
    "rollout_failed": "its revision failed to start",
    "rollout_cancelled": "its rollout was cancelled",
}
# Image labels falemu adds to every build; the engine reports each as a build step of its own.
FALEMU_LABEL_STEP = "LABEL falemu."


def stop_reason_text(reason: str) -> str:
    text = STOP_REASONS.get(reason)
    return f"{text} ({reason})" if text else reason


def _fmt_seconds(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.1f} s"


def queue_stopped_text(event: QueueStopped) -> str:
    """The one line ``falemu up`` prints about its queue when it stops."""
    queued = f"{event.queued} request{'' if event.queued == 1 else 's'} left queued"
    if event.queued:
        queued += " (run at next start"
        queued += f"; {event.requeued} of them cut off in flight)" if event.requeued else ")"
    parts = [queued]
    if event.finished:
        parts.append(f"{event.finished} finished during the stop")
    if event.failed:
        parts.append(f"{event.failed} cut off in flight and not retried (completed with an error)")
    parts.append(f"{event.results} completed result{'' if event.results == 1 else 's'} kept")
    return "queue: " + ", ".join(parts)


def timeline_text(timeline: Mapping[str, float]) -> str:
    """The start-up phases in order (each its own duration); a zero build, an unchanged image, is left out."""
    return ", ".join(
        f"{phase.replace('_', ' ')} {_fmt_seconds(sec)}"
        for phase, sec in timeline.items()
        if not (phase == "build" and sec == 0)
    )


FLUSH_DELAY = 0.02  # seconds a line written to a file or pipe may wait for the next flush
START_LINE_DELAY = 1.0  # a request's start is shown once it has run this long (its end line says the rest)
REQUEST_LINES_PER_SECOND = 20  # per app; the requests beyond it in a second are told in one summary line


class Renderer:
    """Renders events as they come, from any thread."""

    def __init__(
        self,
        *,
        json_lines: bool = False,
        verbose: bool = False,
        stream: TextIO | None = None,
        color: bool | None = None,
        start_line_delay: float = START_LINE_DELAY,
    ) -> None:
        self.json_lines = json_lines
        self.start_line_delay = start_line_delay
        self.verbose = verbose
        self.stream = stream or sys.stdout
        self.color = color
        self._lock = threading.RLock()  # re-entrant: `stopping()` runs in a signal handler of the main thread
        self._in_flight: dict[str, int] = {}
        self._on_runner: dict[str, str] = {}  # request id -> app, of requests a runner has now (a retry: once)
        self._ready: set[str] = set()  # runners that were IDLE once: later RUNNING/IDLE flips are per request
        self._stopping = False  # after Ctrl-C, a start that ends is cancelled, not failed
        try:
            self._tty = self.stream.isatty()
        except (AttributeError, ValueError):
            self._tty = False
        self._flush_wanted = threading.Event()
        self._flusher: threading.Thread | None = None
        self._at_exit = False
        self._starts: dict[str, tuple[float, str, str]] = {}  # request id -> (when to show, app, runner)
        self._window_end = 0.0  # the end of the current second of request lines
        self._window_lines: dict[str, int] = {}  # app -> request lines shown in the current second
        self._held: dict[str, dict[int, int]] = {}  # app -> status -> requests beyond the lines, this second

    def _echo(self, text: str, *, err: bool = False) -> None:
        if err or self._tty:
            if err:
                self.flush()  # what went to stdout before comes first
            with self._lock:
                click.echo(text, file=sys.stderr if err else self.stream, color=self.color)
            return
        if "\x1b" in text and not self.color:
            text = click.unstyle(text)
        self._write(text + "\n")

    def _write(self, line: str) -> None:
        """Write to a file or pipe, flushed within FLUSH_DELAY: one system call for many lines when a
        runner logs every request, and still line by line for a reader at rest."""
        with self._lock:
            self.stream.write(line)
            if self._flush_wanted.is_set():
                return
            self._flush_wanted.set()
            self._ensure_worker()

    def _ensure_worker(self) -> None:
        """The output thread: flushes writes and shows the start lines of long requests (lock held)."""
        if self._flusher is None:
            if not self._at_exit:
                self._at_exit = True
                atexit.register(self.flush)  # before the interpreter tears stdout down
            self._flusher = threading.Thread(target=self._flush_loop, name="falemu-output", daemon=True)
            self._flusher.start()

    def _flush_loop(self) -> None:
        while True:
            with self._lock:
                due = min((start[0] for start in self._starts.values()), default=None)
                if self._held:
                    due = self._window_end if due is None else min(due, self._window_end)
            wait = 1.0 if due is None else max(0.0, min(1.0, due - time.monotonic()))
            if self._flush_wanted.wait(timeout=wait):
                time.sleep(FLUSH_DELAY)
                self.show_long_requests()
                self.show_summaries()
                self.flush()
                continue
            self.show_long_requests()
            self.show_summaries()
            with self._lock:
                if not self._flush_wanted.is_set() and not self._starts and not self._held:  # at rest: the thread ends
                    self._flusher = None
                    return

    def show_summaries(self, now: float | None = None) -> None:
        """Say how many requests each busy app answered beyond its lines, once their second is over."""
        now = time.monotonic() if now is None else now
        with self._lock:
            lines = self._roll_window(now) if now >= self._window_end else []
        for line in lines:
            self._echo(line)

    def _request_line_allowed(self, app: str, status: int) -> bool:
        """Whether a finished request gets its own line (lock held): the first REQUEST_LINES_PER_SECOND
        of an app each second do; the rest are counted for the summary."""
        shown = self._window_lines.get(app, 0)
        if shown < REQUEST_LINES_PER_SECOND:
            self._window_lines[app] = shown + 1
            return True
        held = self._held.setdefault(app, {})
        held[status] = held.get(status, 0) + 1
        self._ensure_worker()
        return False

    def _roll_window(self, now: float) -> list[str]:
        """Start a new second (lock held); returns the summaries of the one that ended."""
        lines = []
        for app, held in self._held.items():
            total = sum(held.values())
            statuses = ", ".join(f"{count} × {status}" for status, count in sorted(held.items()))
            lines.append(
                f"{app}: {total} more request{'s' if total != 1 else ''} in the last second ({statuses}), "
                f"{self._in_flight.get(app, 0)} in flight"
            )
        self._held = {}
        self._window_lines = {}
        self._window_end = now + 1.0
        return lines

    def show_long_requests(self, now: float | None = None) -> None:
        """Show the start lines of the requests that have run for ``start_line_delay`` seconds."""
        now = time.monotonic() if now is None else now
        with self._lock:
            due = sorted((start[0], rid) for rid, start in self._starts.items() if start[0] <= now)
            lines = []
            for _, rid in due:
                _, app, runner = self._starts.pop(rid)
                lines.append(self._start_line(app, rid, runner))
        for line in lines:
            self._echo(line)

    def _start_line(self, app: str, request_id: str, runner: str) -> str:
        return f"{app}: request {request_id} -> {runner} ({self._in_flight.get(app, 0)} in flight)"

    def flush(self) -> None:
        with self._lock:
            self._flush_wanted.clear()
            try:
                self.stream.flush()
            except (OSError, ValueError):
                pass  # the reader went away

    def _style(self, text: str, **kwargs: Any) -> str:
        colored = self.color if self.color is not None else self._tty
        return click.style(text, **kwargs) if colored else text

    def __call__(self, event: Event) -> None:
        if self.json_lines:
            self.json(event.to_dict())
            return
        line = self.render(event)
        if line is not None:
            self._echo(line)

    def json(self, data: Mapping[str, Any]) -> None:
        self._write(json.dumps(dict(data), default=str) + "\n")

    def render(self, event: Event) -> str | None:
        app = event.app
        # The events of every request first, by exact type: they come by the thousand.
        if type(event) is RunnerLog:
            return f"[{event.runner}] {event.line}"
        if type(event) is RequestStarted:
            with self._lock:
                if event.request_id not in self._on_runner:  # a retry's new attempt is still one request
                    self._on_runner[event.request_id] = app
                    self._in_flight[app] = self._in_flight.get(app, 0) + 1
                if self.verbose:
                    return self._start_line(app, event.request_id, event.runner)
                # Quick requests get one line, when they end; a long one is shown once it has run a while.
                self._starts[event.request_id] = (time.monotonic() + self.start_line_delay, app, event.runner)
                self._ensure_worker()
            return None
        if type(event) is RequestCompleted:
            summaries: list[str] = []
            with self._lock:
                n = self._in_flight.get(app, 0)
                # one that no runner took (a start timeout, a caller gone) was never in flight
                if self._on_runner.pop(event.request_id, None) is not None:
                    n = max(0, n - 1)
                    self._in_flight[app] = n
                unseen = self._starts.pop(event.request_id, None) is not None
                if not self.verbose:
                    now = time.monotonic()
                    if now >= self._window_end:
                        summaries = self._roll_window(now)
                    if not self._request_line_allowed(app, event.status_code):
                        return "\n".join(summaries) if summaries else None
            status = self._style(str(event.status_code), fg="green" if event.status_code < 400 else "red")
            where = f" -> {event.runner}" if unseen else "" if event.runner else " (no runner)"
            line = f"{app}: request {event.request_id}{where} {status} in {_fmt_seconds(event.seconds)} ({n} in flight)"
            return "\n".join([*summaries, line])
        if type(event) is RunnerStateChanged:
            if self._stopping and event.state == "FAILURE_DELAY":
                return None
            with self._lock:
                served_before = event.runner in self._ready
                if event.state == "IDLE":
                    self._ready.add(event.runner)
            if not self.verbose and served_before and event.state in ("RUNNING", "IDLE"):
                return None  # the request lines say it: `request ... -> runner`
            state = self._style(event.state, fg=STATE_COLORS.get(event.state))
            return f"[{event.runner}] {state}"
        if isinstance(event, BuildStarted):
            return f"{app}: building {event.image} ({event.steps} steps)"
        if isinstance(event, BuildStep):
            if event.text.startswith(FALEMU_LABEL_STEP) and not self.verbose:
                return None
            return f"{app}: step {event.step}/{event.steps} {event.text}"
        if isinstance(event, BuildOutput):
            return f"{app}:   {event.line}" if self.verbose else None
        if isinstance(event, BuildFinished):
            how = "reused unchanged image" if event.cached else f"built in {_fmt_seconds(event.seconds)}"
            return f"{app}: image {event.image} {how}"
        if self._stopping and isinstance(event, RunnerFailed):
            return f"[{event.runner}] start cancelled: falemu up is stopping"
        if isinstance(event, RunnerReady):
            kind = "cold start, a request was waiting" if event.cold_start else "started ahead of requests"
            if event.early:
                kind += ", begun as falemu up started"
            total = sum(event.timeline.values())
            timeline = timeline_text(event.timeline)
            took = f" in {_fmt_seconds(total)}" if event.timeline else ""
            revision = f" (r{event.revision})" if event.revision > 1 else ""
            return f"[{event.runner}] ready{revision} at {event.address}{took} ({kind}" + (
                f": {timeline})" if timeline else ")"
            )
        if isinstance(event, RunnerFailed):
            text = f"[{event.runner}] " + self._style(f"failed ({event.error_type}): {event.message}", fg="red")
            if event.logs:
                tail = event.logs.strip().splitlines()[-20:]
                text += "\n" + "\n".join(f"[{event.runner}] | {line}" for line in tail)
            return text
        if isinstance(event, RunnerStopped):
            return f"[{event.runner}] stopped: {stop_reason_text(event.reason)}"
        if isinstance(event, RunnerLog):
            return f"[{event.runner}] {event.line}"
        if isinstance(event, ScaledUp):
            return f"{app}: scaling up, {event.runners} runner(s) (target {event.target})"
        if isinstance(event, ScaledDown):
            return f"{app}: scaling down, {event.runners} runner(s) left: {stop_reason_text(event.reason)}"
        if isinstance(event, RequestQueued):
            with self._lock:  # queued again for a retry: its last attempt's runner no longer has it
                if self._on_runner.pop(event.request_id, None) is not None:
                    self._in_flight[app] = max(0, self._in_flight.get(app, 0) - 1)
            return f"{app}: request {event.request_id} queued (position {event.queue_position})"
        if isinstance(event, QueueStopped):
            return queue_stopped_text(event)
        if isinstance(event, QueueResumed):
            text = f"queue: {event.queued} requests left from the last run queued again"
            if event.failed:
                text += f"; {event.failed} cut off in flight could not run again (completed with an error)"
            return text
        if isinstance(event, ReloadStarted | RolloutStarted | RolloutFinished | RolloutFailed):
            return self._rollout_line(event)
        if isinstance(event, FaultStarted | FaultApplied | FaultEnded):
            return self._fault_line(event)
        if isinstance(event, Notice):
            prefix = "warning: " if event.level == "warning" else ""
            if app and app != "falemu" and app not in event.message:
                prefix += f"{app}: "  # which app a warning is about, unless the message names it
            return self._style(f"{prefix}{event.message}", fg="yellow" if event.level == "warning" else None)
        return None

    def _fault_line(self, event: Event) -> str | None:
        app = event.app
        if isinstance(event, FaultStarted):
            return self._style(f"{app}: fault {event.fault} in effect: {event.description}", fg="yellow")
        if isinstance(event, FaultApplied):
            if event.fault_kind in ("error", "latency", "cut") and not self.verbose:
                return None  # the request's own line shows what it got
            return self._style(f"[{event.target}] fault {event.fault}: {event.detail}", fg="yellow")
        assert isinstance(event, FaultEnded)
        why = {"count": "its count ran out", "window": "its time is up", "cleared": "cleared"}.get(
            event.reason, event.reason
        )
        return self._style(f"{app}: fault {event.fault} ended ({why}; it hit {event.applied})", fg="yellow")

    def _rollout_line(self, event: Event) -> str:
        app = event.app
        if isinstance(event, ReloadStarted):
            if not event.changes:
                return f"{app}: reloading: making revision r{event.revision}"
            shown = ", ".join(event.changes[:3]) + (
                f" (+{len(event.changes) - 3} more)" if len(event.changes) > 3 else ""
            )
            return f"{app}: {shown} changed: making revision r{event.revision}"
        if isinstance(event, RolloutStarted):
            order = (
                "the old runners drain once they are ready"
                if event.strategy == "rolling"
                else "after the old runners stop; requests wait meanwhile"
            )
            return (
                f"{app}: rolling out r{event.revision} ({event.strategy}): {event.runners} new runner(s) start, {order}"
            )
        if isinstance(event, RolloutFinished):
            gap = f", {_fmt_seconds(event.unavailable)} without a runner" if event.unavailable > 0 else ""
            took = _fmt_seconds(event.seconds)
            text = f"{app}: r{event.revision} serves ({event.strategy}, {took} after the change{gap})"
            return self._style(text, fg="green")
        assert isinstance(event, RolloutFailed)
        what = {"config": "config error", "build": "build failed", "start": "failed to start"}.get(
            event.stage, event.stage
        )
        text = self._style(
            f"{app}: r{event.revision} {what}: {event.message}; r{event.serving} keeps serving", fg="red"
        )
        if event.logs:
            tail = event.logs.strip().splitlines()[-20:]
            text += "\n" + "\n".join(f"{app}: | {line}" for line in tail)
        return text

    # -- summaries --------------------------------------------------------------------------------

    def serving(
        self,
        *,
        app: str,
        url: str,
        queue_url: str,
        auth: str,
        endpoints: Sequence[str] | None,
        runners: Sequence[Mapping[str, Any]],
    ) -> None:
        """What ``fal deploy`` prints after a deploy: the app's URLs and its endpoints."""
        app_id = urlsplit(url).path.strip("/")  # what fal_client takes: "<owner>/<app>"
        if self.json_lines:
            self.json(
                {
                    "event": "Serving",
                    "app": app,
                    "app_id": app_id,
                    "url": url,
                    "queue_url": queue_url,
                    "auth": auth,
                    "endpoints": list(endpoints) if endpoints is not None else None,
                    "runners": list(runners),
                    "ts": time.time(),
                }
            )
            return
        lines = [self._style(f"── {app} ", bold=True) + self._style(f"(auth: {auth})", dim=True)]
        lines.append(f"  App id {app_id}")
        lines.append(f"  Sync   {url}")
        lines.append(f"  Async  {queue_url}")
        if endpoints:
            lines.append(self._style("  API Endpoints", bold=True))
            for path in endpoints:
                lines.append(f"    Sync   {url}{path}")
                lines.append(f"    Async  {queue_url}{path}")
        for runner in runners:
            where = f" at {runner['url']}" if runner.get("url") else ""  # none yet while it starts
            lines.append(f"  runner {runner['id']}{where} ({runner.get('state')})")
        self._echo("\n".join(lines))
        if endpoints is None:
            self._echo(self._style("warning: " + NO_OPENAPI_WARNING.format(app=app), fg="yellow"))

    def info(self, text: str) -> None:
        if self.json_lines:
            return
        self._echo(text)

    def note(self, text: str) -> None:
        """A remark about the command itself, on stderr, so it never mixes with the data on stdout."""
        self._echo(text, err=True)

    def status(self, event: str, text: str, **data: Any) -> None:
        """A lifecycle line of ``falemu up`` (Ready, Stopping, Stopped): text, or a JSON line in --json mode.

        Flushed at once, also to a pipe: a script waits for these lines.
        """
        if self.json_lines:
            self.json({"event": event, **data, "ts": time.time()})
        else:
            self._echo(text)
        self.flush()

    def stopping(self) -> None:
        """``falemu up`` got Ctrl-C or SIGTERM: say so once, before the cleanup's own lines."""
        with self._lock:
            if self._stopping:
                return
            self._stopping = True
        self.status("Stopping", "stopping...")

    def ps(self, instances: Sequence[Mapping[str, Any]]) -> None:
        if self.json_lines:
            self._echo(json.dumps(list(instances), default=str))
            return
        if not instances:
            self._echo("no falemu up is running")
            return
        rows: list[tuple[str, ...]] = [("APP", "RUNNER", "REV", "STATE", "IN FLIGHT", "SERVED", "AGE", "ADDRESS")]
        for instance in instances:
            self._echo(f"falemu up (pid {instance['pid']}) at {instance['url']}  project {instance['project']}")
            for app in instance["apps"]:
                stats = app.get("stats", {})
                summary = (
                    f"  {app['name']}: {app['url']}  cold starts {stats.get('cold_starts', 0)}, "
                    f"peak {stats.get('peak_runners', 0)} runner(s), {app.get('waiting', 0)} waiting"
                )
                self._echo(summary)
                backoff = app.get("backoff")
                if backoff:
                    self._echo(
                        f"  {app['name']}: FAILURE_DELAY after {backoff['failures']} failed start(s), next start in "
                        f"{backoff['retry_in']} s: {backoff['message']}"
                    )
                revision = app.get("revision")
                if revision is not None and int(revision) > 1:
                    self._echo(f"  {app['name']}: serving revision r{revision}")
                for fault in app.get("faults", []):
                    left = []
                    if fault.get("remaining") is not None:
                        left.append(f"{fault['remaining']} left")
                    if fault.get("seconds_left") is not None:
                        left.append(f"{fault['seconds_left']} s left")
                    extra = f" ({', '.join(left)})" if left else ""
                    self._echo(f"  {app['name']}: fault {fault['id']}: {fault['description']}{extra}")
                for failed in app.get("revisions", [])[-1:]:
                    if failed.get("status") == "failed":
                        self._echo(
                            f"  {app['name']}: r{failed['number']} failed ({failed['stage']}): {failed['error']}"
                        )
                for r in app["runners"]:
                    age = _fmt_seconds(float(r.get("age", 0.0)))
                    rows.append(
                        (
                            app["name"],
                            r["id"],
                            f"r{r.get('revision', 1)}",
                            r["state"],
                            str(r["in_flight"]),
                            str(r["served"]),
                            age,
                            r["url"] or "-",
                        )
                    )
        if len(rows) == 1:
            self._echo("no runners")
            return
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        for row in rows:
            self._echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())

    def log_line(self, data: Mapping[str, Any]) -> None:
        if self.json_lines:
            self.json(data)
            return
        self._echo(f"[{data.get('runner')}] {data.get('line')}")
