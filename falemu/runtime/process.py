"""ProcessRuntime: runners as host subprocesses, for machines without a Docker engine.

Each runner runs the app's command in the project folder: ``RunnerSpec.command`` (``--cmd``), else
``image.entrypoint`` + ``image.cmd`` from the pyproject, else the ``ENTRYPOINT``/``CMD`` (exec form) of
the app's Dockerfile. A leading ``python``/``python3`` runs with the interpreter falemu runs on. The
runner gets fal's runner environment plus ``PORT=<exposed_port>``.

What it does not emulate (``falemu up`` says so in one line when it falls back to it):

* no image build: the app runs with the host's Python and packages, not its image;
* one runner per fixed port: ``exposed_port`` is bound on 127.0.0.1 directly, so a second runner of
  the same app cannot start while the first lives (max_concurrency is effectively 1);
* ``/data`` is not at ``/data``: ``FAL_PERSISTENT_DIR`` and ``HF_HOME`` point into the data folder,
  and apps that hard-code ``/data`` do not see it;
* no machine-type CPU/memory limits.

GPUs: a runner gets the GPUs it would get on fal through ``CUDA_VISIBLE_DEVICES``: falemu counts the
host's GPUs with ``nvidia-smi -L`` (or ``FALEMU_GPU_COUNT``) and gives each runner of a ``GPU-*``
machine type its own ``num_gpus`` device ids (``--gpu auto`` shares the least used ones with a warning
when too few are free, ``--gpu require`` fails). Runners of CPU machine types get
``CUDA_VISIBLE_DEVICES=""``: fal's CPU machines have no GPU. This is what makes falemu useful on GPU
hosts that have the NVIDIA driver and no container engine.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO

from falemu.config.model import AppConfig, AppShape
from falemu.errors import GpuUnavailable, RunnerError
from falemu.events import EventSink, Notice, RunnerFailed, RunnerLog, RunnerReady, null_sink
from falemu.runtime.base import PreparedApp, Runner, RunnerSpec
from falemu.runtime.environment import resolve_secrets, runner_environment
from falemu.runtime.falapp import readiness
from falemu.runtime.gpu import GpuAllocator, GpuPolicy, detect_gpu_count
from falemu.runtime.readiness import Exited, NotReady, ReadinessProbe, startup_error

LOG_TAIL = 50
LIMITS = (
    "process runtime: no image build, one runner per exposed_port, /data is FAL_PERSISTENT_DIR, "
    "GPUs by CUDA_VISIBLE_DEVICES"
)


@dataclass
class ProcessHandle:
    process: subprocess.Popen[bytes]
    grace: float
    lines: deque[str] = field(default_factory=lambda: deque(maxlen=1000))
    total: int = 0  # lines read so far (the deque keeps the last 1000)
    done: threading.Event = field(default_factory=threading.Event)
    cond: threading.Condition = field(default_factory=threading.Condition)
    reader: threading.Thread | None = None
    gpu_key: str = ""  # the key the runner's GPUs are held under


def _dockerfile_command(app: AppConfig) -> list[str] | None:
    if app.image is None or app.image.dockerfile is None:
        return None
    path = app.image.dockerfile if app.image.dockerfile.is_absolute() else app.project_root / app.image.dockerfile
    try:
        text = re.sub(r"\\[ \t]*\r?\n", " ", path.read_text(encoding="utf-8"))
    except OSError:
        return None
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        match = re.match(r"^\s*(ENTRYPOINT|CMD)\s+(.*)$", line, re.IGNORECASE)
        if not match:
            continue
        raw = match[2].strip()
        try:
            value = json.loads(raw)
            parts = [str(v) for v in value] if isinstance(value, list) else ["/bin/sh", "-c", raw]
        except json.JSONDecodeError:
            parts = ["/bin/sh", "-c", raw]
        found[match[1].upper()] = parts
    command = found.get("ENTRYPOINT", []) + found.get("CMD", [])
    return command or None


def app_command(app: AppConfig, override: tuple[str, ...] | None = None) -> list[str]:
    """The command a process runner runs (see the module docstring for the order)."""
    if override:
        command = list(override)
    elif app.fal_app is not None:
        # fal's own local serving (`fal run --local`): the App in the host's Python, on 8080 and 9090.
        from falemu.runtime.falapp import RUNNER_FILES

        fal_app = app.fal_app
        serve = str(RUNNER_FILES / "falemu_serve.py")
        port, metrics = str(app.exposed_port or 8080), str(app.metrics_port or 9090)
        return [sys.executable, serve, str(fal_app.file), fal_app.class_name, port, metrics]
    elif app.image is not None and (app.image.entrypoint or app.image.cmd):
        command = list(app.image.entrypoint or ()) + list(app.image.cmd or ())
    else:
        found = _dockerfile_command(app)
        if found is None:
            raise RunnerError(
                f"{app.alias} has no command for the process runtime",
                hint="pass --cmd '<command>', or set image.cmd in the pyproject",
            )
        command = found
    if command and os.path.basename(command[0]) in ("python", "python3", f"python3.{sys.version_info[1]}"):
        command[0] = sys.executable
    return command


def _port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class ProcessRuntime:
    name = "process"

    def __init__(self, poll_interval: float = 0.02, *, gpu_count: int | None = None) -> None:
        self._poll = poll_interval
        self._lock = threading.Lock()
        self._runners: dict[int, Runner] = {}  # by process id
        self._mount_notes: set[str] = set()  # apps told that mounts are not made
        total = gpu_count if gpu_count is not None else detect_gpu_count(local_engine=True)
        self._gpus = GpuPolicy(GpuAllocator(total))
        self._gpu_notes: set[str] = set()  # apps told that this host has no GPU for them
        self._starts = 0

    def prepare(self, app: AppConfig, events: EventSink = null_sink, verbose: bool = False) -> PreparedApp:
        if app.shape is AppShape.FAL_APP and app.fal_app is None:
            from falemu.config.falapp import load_fal_app

            app = load_fal_app(app)
        return PreparedApp(app=app, image=None, built=False)

    def start(self, spec: RunnerSpec, events: EventSink = null_sink) -> Runner:
        app = spec.prepared.app
        port = app.exposed_port or 8080
        started = time.monotonic()
        if _port_in_use(port):
            raise RunnerError(
                f"port {port} is already in use: the process runtime runs one runner per exposed_port",
                hint="stop whatever listens there, or use the docker runtime for several runners",
            )
        command = app_command(app, spec.command)
        if spec.mounts:
            self._note_mounts(spec, events)
        spec.data_dir.mkdir(parents=True, exist_ok=True)
        found, _missing = resolve_secrets(app)
        env = dict(os.environ)
        env.update(
            runner_environment(
                app,
                owner=spec.owner,
                runner_id=spec.runner_id,
                data_path=str(spec.data_dir.resolve()),
                secrets=found,
                extra=spec.env,
            )
        )
        env["PORT"] = str(port)
        env.setdefault("PYTHONUNBUFFERED", "1")
        with self._lock:
            self._starts += 1
            gpu_key = f"{app.alias}/{spec.runner_id}/{self._starts}"
        visible = self._visible_devices(spec, events, gpu_key)
        if visible is not None:
            env["CUDA_VISIBLE_DEVICES"] = visible
        try:
            process = subprocess.Popen(
                command,
                cwd=app.project_root,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            self._gpus.release(gpu_key)
            raise RunnerError(
                f"runner {spec.runner_id} of {app.alias} could not run {command[0]}: {exc.strerror}",
                hint="check the command (--cmd) and PATH",
            ) from None
        handle = ProcessHandle(process, float(app.scaling.termination_grace_period_seconds), gpu_key=gpu_key)
        runner = Runner(id=spec.runner_id, app=app.alias, host="127.0.0.1", port=port, handle=handle)
        runner.gpu_ids = tuple(visible.split(",")) if visible else ()
        timeline = {"build": 0.0, "create": 0.0, "start": time.monotonic() - started}
        assert process.stdout is not None
        handle.reader = threading.Thread(
            target=self._read, args=(runner, process.stdout, spec, events), name=f"falemu-proc-{spec.runner_id}"
        )
        handle.reader.daemon = True
        handle.reader.start()
        with self._lock:
            self._runners[process.pid] = runner
        limit = float(spec.startup_timeout if spec.startup_timeout is not None else app.scaling.startup_timeout)
        health_path, health_method = readiness(app)
        probe = ReadinessProbe("127.0.0.1", port, health_path, poll_interval=self._poll, health_method=health_method)
        try:
            timeline.update(
                probe.wait(max(0.0, limit - (time.monotonic() - started)), exited=lambda: self._exited(handle))
            )
        except NotReady as exc:
            self.stop(runner, grace=0)
            handle.done.wait(2)
            logs = "\n".join(list(handle.lines)[-LOG_TAIL:])
            error = startup_error(
                exc,
                runner=runner.id,
                app=app.alias,
                logs=logs,
                limit=limit,
                port=port,
                health_path=health_path,
                timeout_hint=f"it must serve HTTP on 127.0.0.1:{port} (PORT is set to {port})",
                health_method=health_method,
            )
            events(
                RunnerFailed(app.alias, runner=runner.id, error_type=error.error_type, message=error.message, logs=logs)
            )
            raise error from None
        runner.timeline = timeline
        events(RunnerReady(app.alias, runner=runner.id, address=runner.url, timeline=dict(timeline)))
        return runner

    def _visible_devices(self, spec: RunnerSpec, events: EventSink, key: str) -> str | None:
        """``CUDA_VISIBLE_DEVICES`` for a runner (None: leave it as the host has it)."""
        app = spec.prepared.app
        total = self._gpus.total
        if not app.wants_gpu or spec.gpu == "off":
            return "" if total else None  # fal's CPU machines have no GPU
        if not total:
            where = "nvidia-smi finds none" if total == 0 else "nvidia-smi is not available"
            if spec.gpu == "require":
                raise GpuUnavailable(
                    f"{app.alias} needs {app.gpu_count} GPU(s) and this host has none ({where})",
                    hint="run on a machine with an NVIDIA GPU and its driver, or use --gpu auto to run on CPU",
                )
            with self._lock:
                first = app.alias not in self._gpu_notes
                self._gpu_notes.add(app.alias)
            if first:
                events(
                    Notice(
                        app.alias,
                        level="warning",
                        message=f"{app.alias} asks for {app.gpu_count} GPU(s) and this host has none ({where}): "
                        "its runners run on CPU",
                    )
                )
            return None
        grant = self._gpus.plan(spec, events, key)
        return ",".join(grant.device_ids) if grant is not None and grant.device_ids else None

    def _note_mounts(self, spec: RunnerSpec, events: EventSink) -> None:
        """Bind mounts need a container; a host process sees host paths as they are. Said once per app."""
        app = spec.prepared.app
        with self._lock:
            if app.alias in self._mount_notes:
                return
            self._mount_notes.add(app.alias)
        listed = ", ".join(f"{host} -> {target}" for host, target in spec.mounts.items())
        events(
            Notice(
                app.alias,
                level="info",
                message=f"the process runtime does not mount {listed}: runners see host paths as they are",
            )
        )

    @staticmethod
    def _exited(handle: ProcessHandle) -> Exited | None:
        code = handle.process.poll()
        return None if code is None else Exited(code)

    def _read(self, runner: Runner, stream: IO[bytes], spec: RunnerSpec, events: EventSink) -> None:
        handle = runner.handle
        assert isinstance(handle, ProcessHandle)
        for raw in iter(stream.readline, b""):
            line = raw.decode(errors="replace").rstrip("\r\n")
            with handle.cond:
                handle.lines.append(line)
                handle.total += 1
                handle.cond.notify_all()
            if spec.on_log is not None:
                spec.on_log(line)
            elif events is not null_sink:
                events(RunnerLog(runner.app, runner=runner.id, line=line))
        stream.close()
        with handle.cond:
            handle.done.set()
            handle.cond.notify_all()

    def stop(self, runner: Runner, grace: float | None = None) -> None:
        handle = runner.handle
        if not isinstance(handle, ProcessHandle):
            return
        wait = handle.grace if grace is None else grace
        process = handle.process
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        with self._lock:
            self._runners.pop(process.pid, None)
        self._gpus.release(handle.gpu_key)

    def logs(self, runner: Runner, follow: bool = False) -> Iterator[str]:
        handle = runner.handle
        if not isinstance(handle, ProcessHandle):
            return
        with handle.cond:
            seen = list(handle.lines)
            count = handle.total
        yield from seen
        while follow:
            with handle.cond:
                while handle.total == count and not handle.done.is_set():
                    handle.cond.wait(0.5)
                lines = list(handle.lines)
                fresh = lines[max(0, len(lines) - (handle.total - count)) :] if handle.total > count else []
                count = handle.total
                finished = handle.done.is_set()
            yield from fresh
            if finished and not fresh:
                return

    def is_alive(self, runner: Runner) -> bool:
        handle = runner.handle
        return isinstance(handle, ProcessHandle) and handle.process.poll() is None

    def close(self) -> None:
        with self._lock:
            runners = list(self._runners.values())
        threads = [threading.Thread(target=self.stop, args=(r,), daemon=True) for r in runners]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
