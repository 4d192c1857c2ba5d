"""DockerRuntime: runners as containers on a real Docker engine.

The engine is the one ``DOCKER_HOST`` names (with ``DOCKER_TLS_VERIFY``/``DOCKER_CERT_PATH``), the
default socket otherwise. Runners are reached at the engine's address: ``tcp://x`` means ``x`` (ports
are then published on all of the engine's interfaces), a local socket means 127.0.0.1 (ports are
published on 127.0.0.1 only). Each runner container

* carries falemu's labels (:mod:`falemu.runtime.labels`) and an ephemeral host port for ``exposed_port``;
* gets fal's runner environment and the app's secrets (:mod:`falemu.runtime.environment`), ``/data``
  bind-mounted from the shared data folder, and ``host.docker.internal`` mapped to the host gateway;
* with ``machine_limits``, gets its machine type's CPUs and memory;
* asks for GPUs as :class:`~falemu.runtime.gpu.GpuPolicy` decides;
* is ready as :mod:`falemu.runtime.readiness` decides, or fails with its exit code and logs.

Every method may be called from several threads at once.
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from falemu import prelaunch
from falemu.config.model import AppConfig, AppShape
from falemu.errors import ImageError, RunnerError
from falemu.events import EventSink, Notice, RunnerFailed, RunnerLog, RunnerReady, null_sink
from falemu.names import container_name as container_name
from falemu.runtime import addresses, labels
from falemu.runtime.base import PreparedApp, Runner, RunnerSpec
from falemu.runtime.cleanup import install_exit_cleanup, reap_orphans
from falemu.runtime.engine import (
    arch_mismatch,
    connect,
    docker_host,
    engine_address,
    engine_is_local,
    first_line,
    normalize_arch,
    unavailable,
)
from falemu.runtime.engine_api import EngineAPI, EngineCallError, socket_path
from falemu.runtime.environment import data_binds, machine_for, resolve_secrets, runner_environment
from falemu.runtime.falapp import FalAppImages, explain_startup_failure, readiness
from falemu.runtime.gpu import GpuAllocator, GpuGrant, GpuPolicy, detect_gpu_count, is_no_gpu_error
from falemu.runtime.gpu_probe import GpuProbe
from falemu.runtime.images import build_image, ensure_image
from falemu.runtime.readiness import (
    Exited,
    NotReady,
    ReadinessProbe,
    ipv6_only_message,
    listening_sockets,
    loopback_message,
    startup_error,
    wrong_port_message,
)

LOG_TAIL = 50
DIRECT_PROBE_SECONDS = 0.25  # a container address that does not accept within this is not reachable from here
FAL_APP_LOG_TAIL = 300  # a failed setup() is followed by fal's serve loop's own tracebacks
DEFAULT_PORT = 8080  # fal.App and entry-point apps serve on 8080


@dataclass
class ContainerHandle:
    """The runtime's handle on one runner container (``Runner.handle``)."""

    id: str
    name: str
    grace: float
    gpu: GpuGrant | None = None
    log_thread: threading.Thread | None = None
    direct: tuple[str, int, int] | None = None  # (address, port, init PID) when reached at its bridge address


class DockerRuntime:
    name = "docker"

    def __init__(
        self,
        base_url: str | None = None,
        *,
        gpu_count: int | None = None,
        events: EventSink = null_sink,
        reap: bool = True,
        poll_interval: float = 0.02,
        exit_cleanup: bool = False,
        python_image: str | None = None,
        probe_gpus: bool = True,
    ) -> None:
        # A unix-socket engine is asked over the socket on a runner's way to ready (runtime.engine_api);
        # the Docker SDK connects in the background once the first runner's container started.
        self._base_url = base_url
        self._sdk: Any | None = None
        self._sdk_lock = threading.Lock()
        path = socket_path(base_url)
        if path is not None:
            if find_spec("docker") is None:  # needed after the start (logs, stop): said now, as connect() would
                raise ImportError("the docker package is not installed")
            self._api = EngineAPI(path)
            try:
                self._api.ping()
            except OSError as exc:
                raise unavailable(docker_host(base_url), exc) from None
        else:
            self._sdk = connect(base_url)
            self._api = EngineAPI(sdk=lambda: self._client)
        self._python_image = python_image  # base of fal.Apps without an image (default: python:X.Y-slim)
        self._falapps: FalAppImages | None = None
        self.address = engine_address(base_url)
        self._local = engine_is_local(base_url)
        self._publish_ip = "127.0.0.1" if self._local else "0.0.0.0"
        total = gpu_count if gpu_count is not None else detect_gpu_count(self._local)
        self._gpus = GpuPolicy(GpuAllocator(total))
        # A local engine on a host without NVIDIA driver: whether it gives GPUs is learned before the first
        # GPU runner starts (falemu.runtime.gpu_probe).
        self._gpu_probe: GpuProbe | None = None
        if probe_gpus and self._local and total is None:
            self._gpu_probe = GpuProbe(self._api, self.engine_info, self._remove_quietly)
        self._poll = poll_interval
        # FALEMU_DIRECT_ROUTING=0 keeps runners behind their published ports (see _route_direct).
        self._direct_routing = os.environ.get("FALEMU_DIRECT_ROUTING", "1").strip().lower() not in ("0", "false", "no")
        self._lock = threading.Lock()
        self._build_locks: dict[str, threading.Lock] = {}
        self._runners: dict[str, Runner] = {}
        self._builds_told: set[tuple[str, str | None, float]] = set()  # see _build_share
        self._info: dict[str, Any] | None = None
        self._closed = False
        if reap:
            reap_orphans(self._api, events)
        if exit_cleanup:
            install_exit_cleanup(self.close)

    @property
    def client(self) -> Any:
        """The Docker SDK client (for diagnostics and tests)."""
        return self._client

    @property
    def _client(self) -> Any:
        """The Docker SDK client, connected on first use."""
        sdk = self._sdk
        if sdk is None:
            with self._sdk_lock:
                if self._sdk is None:
                    self._sdk = connect(self._base_url)
                sdk = self._sdk
        return sdk

    def _sdk_client(self) -> Any:
        return self._client

    def _connect_soon(self) -> None:
        """Connect the SDK in a thread now, so that what needs it later (logs, stop) does not wait."""
        if self._sdk is None:
            threading.Thread(target=self._connect_quietly, name="falemu-docker-connect", daemon=True).start()

    def _connect_quietly(self) -> None:
        with contextlib.suppress(Exception):  # whoever needs the client next is told why it cannot be had
            self._sdk_client()

    def network(self, name: str) -> dict[str, Any] | None:
        """The engine's description of network ``name`` (``docker network inspect``), None when it has none."""
        return self._api.network(name)

    def engine_info(self) -> dict[str, Any]:
        if self._info is None:
            self._info = self._api.info()
        return self._info

    # -- images -------------------------------------------------------------------------------

    def prepare(self, app: AppConfig, events: EventSink = null_sink, verbose: bool = False) -> PreparedApp:
        if app.shape is AppShape.FAL_APP:
            return self._prepare_fal_app(app, events, verbose)
        if app.image is None:
            raise ImageError(
                f"{app.alias} has no image table: the docker runtime runs apps from a Dockerfile or an image",
                hint=f"add [tool.fal.apps.{app.name}.image] with dockerfile = ... or image = ..., "
                "or use --runtime process",
            )
        with self._lock:
            build_lock = self._build_locks.setdefault(app.alias, threading.Lock())
        with build_lock:
            if app.image.dockerfile is not None:
                image, built, seconds = build_image(self._sdk_client, self._api.has_image, app, events, verbose)
            else:
                image, built, seconds = ensure_image(self._sdk_client, self._api.has_image, app, events), False, 0.0
        if app.wants_gpu and self._gpu_probe is not None:  # answered while the caller gets ready to start runners
            self._gpu_probe.ask(app.alias, image, app.gpu_count, app.project_root)
        arch = self._check_arch(app, image, events)
        return PreparedApp(app=app, image=image, built=built, build_seconds=seconds, arch=arch)

    def _prepare_fal_app(self, app: AppConfig, events: EventSink, verbose: bool) -> PreparedApp:
        """A fal.App: loaded by fal's loader (when the caller has not), then its image (runtime.falapp)."""
        if app.fal_app is None:
            from falemu.config.falapp import load_fal_app

            app = load_fal_app(app)
        with self._lock:
            build_lock = self._build_locks.setdefault(app.alias, threading.Lock())
            if self._falapps is None:
                self._falapps = FalAppImages(self._sdk_client, self._api, python_image=self._python_image)
        with build_lock:
            image, built, seconds, _python = self._falapps.prepare(app, events, verbose)
        if app.wants_gpu and self._gpu_probe is not None:  # answered while the caller gets ready to start runners
            self._gpu_probe.ask(app.alias, image, app.gpu_count, app.project_root)
        arch = self._check_arch(app, image, events)
        return PreparedApp(app=app, image=image, built=built, build_seconds=seconds if built else 0.0, arch=arch)

    def _check_arch(self, app: AppConfig, image: str, events: EventSink) -> str | None:
        try:
            image_arch = normalize_arch((self._api.image(image) or {}).get("Architecture"))
        except Exception:
            return None
        warning = arch_mismatch(image_arch, self.engine_info().get("Architecture"))
        if warning:
            events(Notice(app.alias, level="warning", message=f"{image}: {warning}"))
        return image_arch

    # -- runners ------------------------------------------------------------------------------

    def _build_share(self, prepared: PreparedApp) -> float:
        """The image's build time in a runner's start-up: the first runner started from a build waited for it;
        the runners after it (scale-out, replacements) did not, as on fal, where images are built at deploy."""
        if not prepared.build_seconds:
            return 0.0
        build = (prepared.app.alias, prepared.image, prepared.build_seconds)
        with self._lock:
            if build in self._builds_told:
                return 0.0
            self._builds_told.add(build)
        return prepared.build_seconds

    def start(self, spec: RunnerSpec, events: EventSink = null_sink) -> Runner:
        if self._closed:
            raise RunnerError("the docker runtime is closed", hint="create a new runtime")
        app = spec.prepared.app
        if spec.prepared.image is None:
            raise RunnerError(f"{app.alias} has no image to start", hint="prepare the app with the docker runtime")
        started = time.monotonic()
        timeline: dict[str, float] = {"build": self._build_share(spec.prepared)}
        port = app.exposed_port or DEFAULT_PORT
        # The container name keys this runner everywhere (runner ids are the caller's and need not be unique).
        name = prelaunch.reserved_name(spec.runner_id) or container_name(app.alias, spec.runner_id)
        if app.wants_gpu and spec.gpu != "off" and self._gpu_probe is not None and not self._gpus.engine_refuses:
            refused = self._gpu_probe.ask(app.alias, spec.prepared.image, app.gpu_count, app.project_root).result()
            if refused is not None:
                self._gpus.refused(spec, events, refused, "")  # as the runner's own start would have
        grant = self._gpus.plan(spec, events, name)
        try:
            container_id, early = self._create(spec, name, port, grant, events)
        except BaseException:
            self._gpus.release(name)
            raise
        if early is not None:  # created and started by `falemu up`'s early launch: its times are the runner's
            started = early.began
            timeline["create"] = early.created - early.began
        else:
            timeline["create"] = time.monotonic() - started
        handle = ContainerHandle(container_id, name, float(app.scaling.termination_grace_period_seconds), gpu=grant)
        runner = Runner(id=spec.runner_id, app=app.alias, host=self.address, port=0, handle=handle)
        with self._lock:
            self._runners[name] = runner
        try:
            mark = early.created if early is not None else time.monotonic()
            try:
                if early is None:
                    self._api.start(container_id)
            except EngineCallError as exc:
                if grant is None or not is_no_gpu_error(exc.explanation):
                    raise RunnerError(
                        f"runner {spec.runner_id} of {app.alias} could not start: {first_line(exc.explanation)}",
                        hint="check the image's entrypoint/cmd and the engine's logs",
                    ) from None
                # The engine has no GPU support: start again on CPU (or fail under --gpu require).
                self._remove_quietly(container_id)
                self._gpus.refused(spec, events, first_line(exc.explanation), name)
                container_id, _ = self._create(spec, name, port, None, events)
                handle.id, handle.gpu = container_id, None
                self._api.start(container_id)
            running = early.running if early is not None else time.monotonic()
            timeline["start"] = running - mark
            self._connect_soon()
            runner.port = self._host_port(container_id, port)
            runner.gpu_ids = handle.gpu.device_ids if handle.gpu else ()
            self._wait_ready(spec, runner, port, started, timeline, events, running)
            self._route_direct(runner, container_id, port)
        except BaseException:
            if not spec.keep_failed:
                self._discard(runner)
            else:
                with self._lock:
                    self._runners.pop(name, None)
                self._gpus.release(name)
            raise
        runner.timeline, runner.early = timeline, early is not None
        if spec.on_log is not None or events is not null_sink:
            handle.log_thread = threading.Thread(
                target=self._follow_logs, args=(runner, spec, events), name=f"falemu-logs-{runner.id}", daemon=True
            )
            handle.log_thread.start()
        events(
            RunnerReady(app.alias, runner=runner.id, address=runner.url, timeline=dict(timeline), early=runner.early)
        )
        return runner

    def _create(
        self, spec: RunnerSpec, name: str, port: int, grant: GpuGrant | None, events: EventSink
    ) -> tuple[str, prelaunch.Launched | None]:
        """Create the runner's container: its id, and the early launch's record when that container was
        made (and started) by ``falemu up``'s early launch with this very request (falemu.prelaunch)."""
        app = spec.prepared.app
        found, missing = resolve_secrets(app)
        if missing:
            events(
                Notice(
                    app.alias,
                    level="warning",
                    message=f"secret(s) {', '.join(missing)} not set in the environment or {app.project_root / '.env'}",
                )
            )
        env = runner_environment(app, owner=spec.owner, runner_id=spec.runner_id, secrets=found, extra=spec.env)
        data = data_binds(app, spec.data_dir)
        host_config: dict[str, Any] = {}
        if spec.data_mode == "full":  # a fault: no room and no inode left, so every write fails with ENOSPC
            host_config["Tmpfs"] = {target: "size=4k,nr_inodes=1" for target in data.values()}
            data = {}
        mode = "ro" if spec.data_mode == "read-only" else "rw"
        binds = [f"{host}:{target}:{mode}" for host, target in data.items()]
        binds += [f"{Path(host).resolve()}:{target}:rw" for host, target in spec.mounts.items()]
        host_config.update(
            {
                "PortBindings": {f"{port}/tcp": [{"HostIp": self._publish_ip, "HostPort": ""}]},
                "Binds": binds,
                "ExtraHosts": ["host.docker.internal:host-gateway"],
            }
        )
        if grant is not None:
            host_config["DeviceRequests"] = [grant.device_request()]
        if spec.machine_limits:
            host_config.update(self._limits(spec, events))
        image_cfg = app.image
        command = list(spec.command) if spec.command else (list(image_cfg.cmd) if image_cfg and image_cfg.cmd else None)
        entrypoint = list(image_cfg.entrypoint) if image_cfg and image_cfg.entrypoint else None
        if app.fal_app is not None:
            command, entrypoint = None, None  # the image's entrypoint serves the App (runtime.falapp)
        config: dict[str, Any] = {
            "Image": spec.prepared.image,
            "Env": [f"{key}={value}" for key, value in env.items()],
            "Labels": labels.runner_labels(app.alias, spec.runner_id, app.project_root),
            "ExposedPorts": {f"{port}/tcp": {}},
            "HostConfig": host_config,
        }
        if command is not None:
            config["Cmd"] = command
        if entrypoint is not None:
            config["Entrypoint"] = entrypoint
        early = prelaunch.claim(self._api.path, name, config)
        if app.secrets:
            prelaunch.do_not_plan(app.alias)
        prelaunch.record(app.alias, spec.runner_id, config, self._api.path, self._api.prefix)
        if early is not None:
            return early.container_id, early
        try:
            return self._api.create(name, config), None
        except EngineCallError as exc:
            text = first_line(exc.explanation)
            if grant is not None and is_no_gpu_error(text):
                self._gpus.refused(spec, events, text, name)
                return self._create(spec, name, port, None, events)
            raise RunnerError(
                f"runner {spec.runner_id} of {app.alias} could not be created: {text}",
                hint="check the image and the engine (falemu doctor)",
            ) from None

    def _limits(self, spec: RunnerSpec, events: EventSink) -> dict[str, Any]:
        app = spec.prepared.app
        machine_name, machine = machine_for(app)
        if machine is None:
            events(
                Notice(app.alias, level="warning", message=f"unknown machine_type {machine_name}: no CPU/memory limits")
            )
            return {}
        cpus = machine.cpus
        host_cpus = int(self.engine_info().get("NCPU") or 0)
        if host_cpus and cpus > host_cpus:
            events(
                Notice(
                    app.alias,
                    level="warning",
                    message=f"{machine_name} has {cpus:g} CPUs but the engine has {host_cpus}: limited to {host_cpus}",
                )
            )
            cpus = host_cpus
        memory = machine.memory_mb * 1024 * 1024
        # No swap beyond the limit: fal machines have none, so an app too big for its machine dies here too.
        return {"NanoCpus": int(cpus * 1e9), "Memory": memory, "MemorySwap": memory}

    def _host_port(self, container_id: str, port: int) -> int:
        attrs = self._api.container(container_id)
        if attrs is None:
            return 0  # removed meanwhile (`falemu down`, `docker rm`): the readiness wait reports it
        bindings = (attrs.get("NetworkSettings", {}).get("Ports") or {}).get(f"{port}/tcp") or []
        for binding in bindings:
            if binding.get("HostPort"):
                return int(binding["HostPort"])
        state = attrs.get("State", {})
        if not state.get("Running"):
            return 0  # exited already: the readiness wait reports it with its logs
        raise RunnerError(
            f"the engine published no host port for port {port} of container {attrs.get('Name', container_id)}",
            hint="the engine's network may be disabled (--bridge=none); check `docker info`",
        )

    def _exited(self, container_id: str, spec: RunnerSpec) -> Exited | None:
        attrs = self._api.container(container_id)
        if attrs is None:
            return Exited(None, "the container was removed")
        state = attrs.get("State", {})
        if state.get("Running") or state.get("Status") in ("created", "restarting"):
            return None
        detail = state.get("Error") or ""
        if state.get("OOMKilled"):
            name, machine = machine_for(spec.prepared.app)
            size = f" ({machine.memory_mb} MB on {name})" if machine and spec.machine_limits else ""
            detail = f"killed for using more memory than its limit{size}"
        return Exited(state.get("ExitCode"), detail)

    def _diagnose(self, container_id: str, port: int, seen: list[list[tuple[str, int]]]) -> str | None:
        """Why the port stays silent, from the container's listening sockets (None when unknown)."""
        text = self._proc_net_tcp(container_id)
        if text is None:
            return None
        sockets = listening_sockets(text)
        seen[:] = [sockets]
        return loopback_message(sockets, port)

    def _proc_net_tcp(self, container_id: str) -> str | None:
        """``/proc/net/tcp{,6}`` of the container.

        On a local engine, read from this host's ``/proc`` of the container's first process (no process
        is started in a container that is busy starting); else, or when that fails, read inside the
        container with ``cat``.
        """
        if self._local:
            text = self._host_proc_net_tcp(container_id, own_only=True)
            if text is not None:
                return text
        try:
            result = self._client.api.exec_create(container_id, ["cat", "/proc/net/tcp", "/proc/net/tcp6"])
            output = self._client.api.exec_start(result["Id"])
            inspect = self._client.api.exec_inspect(result["Id"])
            if inspect.get("ExitCode") == 0:
                return output.decode(errors="replace") if isinstance(output, bytes) else str(output)
        except Exception:
            pass
        if self._publish_ip != "127.0.0.1":
            return None  # a remote engine: its /proc is not ours
        return self._host_proc_net_tcp(container_id, own_only=False)

    def _host_proc_net_tcp(self, container_id: str, own_only: bool) -> str | None:
        """The container's sockets from this host's ``/proc``; with ``own_only``, only when the process of
        that PID is in the container's cgroup (an engine in a VM, such as Docker Desktop's, reports PIDs
        of the VM, which on this host are other processes)."""
        try:
            pid = int((self._api.container(container_id) or {})["State"]["Pid"])
            if pid <= 0:
                return None
            if own_only and container_id not in Path(f"/proc/{pid}/cgroup").read_text():
                return None
            return "".join(Path(f"/proc/{pid}/net/{name}").read_text() for name in ("tcp", "tcp6"))
        except Exception:
            return None

    def _wait_ready(
        self,
        spec: RunnerSpec,
        runner: Runner,
        port: int,
        started: float,
        timeline: dict[str, float],
        events: EventSink,
        running: float,
    ) -> None:
        """Wait for readiness; the timeline's ``port_open`` counts from ``running``, when the engine started it."""
        app = spec.prepared.app
        handle = runner.handle
        assert isinstance(handle, ContainerHandle)
        limit = float(spec.startup_timeout if spec.startup_timeout is not None else app.scaling.startup_timeout)
        remaining = max(0.0, limit - (time.monotonic() - started))
        health_path, health_method = readiness(app)
        probe = ReadinessProbe(
            runner.host, runner.port, health_path, poll_interval=self._poll, health_method=health_method
        )
        seen: list[list[tuple[str, int]]] = []
        wrong_port: list[str] = []  # what the last diagnoses saw listening, when it was not exposed_port
        ipv6_only: list[str] = []

        def diagnose() -> str | None:
            found = self._diagnose(handle.id, port, seen)
            if found is None and seen:
                only6 = ipv6_only_message(seen[0], port, self._bridge_address(handle.id))
                if only6 is None:
                    ipv6_only.clear()
                else:
                    ipv6_only.append(only6)
                    if len(ipv6_only) == 2:  # twice a second apart: not a server that binds IPv4 next
                        return only6
            hint = wrong_port_message(seen[0], port) if seen else None
            if hint is None:
                wrong_port.clear()
                return found
            wrong_port.append(hint)
            if len(wrong_port) == 2:  # seen twice a second apart: not a server still opening its ports
                events(
                    Notice(
                        app.alias,
                        level="warning",
                        message=f"runner {runner.id}: {hint}; falemu keeps waiting for port {port} until "
                        f"startup_timeout ({limit:g} s), as fal does",
                    )
                )
            return found

        try:
            timeline.update(
                probe.wait(remaining, exited=lambda: self._exited(handle.id, spec), diagnose=diagnose, since=running)
            )
        except NotReady as exc:
            logs = self._tail(handle.id, FAL_APP_LOG_TAIL if app.fal_app is not None else LOG_TAIL)
            error = startup_error(
                exc,
                runner=runner.id,
                app=app.alias,
                logs=logs,
                limit=limit,
                port=port,
                health_path=health_path,
                cause=wrong_port_message(seen[0], port) if seen else None,
                health_method=health_method,
            )
            if app.fal_app is not None:
                error = explain_startup_failure(error, logs)
                logs = error.logs
            events(
                RunnerFailed(app.alias, runner=runner.id, error_type=error.error_type, message=error.message, logs=logs)
            )
            raise error from None

    def _bridge_address(self, container_id: str) -> str | None:
        """The container's IPv4 address on the engine's network, when this host reaches it directly."""
        if not self._local or self._publish_ip != "127.0.0.1":
            return None
        try:
            settings = self._client.api.inspect_container(container_id).get("NetworkSettings") or {}
        except Exception:
            return None
        found = [settings.get("IPAddress")] + [n.get("IPAddress") for n in (settings.get("Networks") or {}).values()]
        return next((address for address in found if address), None)

    def _route_direct(self, runner: Runner, container_id: str, port: int) -> None:
        """Reach the runner at its container address when this host can, skipping Docker's port proxy.

        A published port goes through ``docker-proxy``, a userland process that copies every byte of
        every request and answer once more: on a local Linux engine the gateway connects to the
        container's bridge address instead (about 100 us of CPU less per request). Docker Desktop and
        rootless engines cannot reach bridge addresses from the host; a quick connection test decides,
        and the published port stays in use where it fails. The engine gives a dead container's address
        to the next container at once, so the address is claimed with the container's init process
        (:mod:`falemu.runtime.addresses`; the gateway checks it before each new connection): where this
        host cannot see that process (falemu itself in a container), the published port stays in use.
        """
        if not self._direct_routing or self._publish_ip != "127.0.0.1":
            return
        try:
            info = self._api.container(container_id)
        except Exception:
            return
        if info is None:
            return
        settings = info.get("NetworkSettings") or {}
        pid = int((info.get("State") or {}).get("Pid") or 0)
        candidates = [settings.get("IPAddress")] + [
            n.get("IPAddress") for n in (settings.get("Networks") or {}).values()
        ]
        for address in candidates:
            if not address:
                continue
            try:
                with socket.create_connection((address, port), timeout=DIRECT_PROBE_SECONDS):
                    pass
            except OSError:
                continue
            if addresses.claim(address, port, pid):
                runner.host, runner.port, runner.holder = address, port, pid
                handle = runner.handle
                if isinstance(handle, ContainerHandle):
                    handle.direct = (address, port, pid)
            return

    def _tail(self, container_id: str, lines: int = LOG_TAIL) -> str:
        try:
            raw = self._client.api.logs(container_id, tail=lines)
        except Exception:
            return ""
        return raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)

    def _follow_logs(self, runner: Runner, spec: RunnerSpec, events: EventSink) -> None:
        handle = runner.handle
        assert isinstance(handle, ContainerHandle)
        try:
            for line in self._stream_lines(handle.id, follow=True):
                if spec.on_log is not None:
                    spec.on_log(line)
                elif events is not null_sink:
                    events(RunnerLog(runner.app, runner=runner.id, line=line))
        except Exception:
            return  # the container went away

    def _stream_lines(self, container_id: str, follow: bool) -> Iterator[str]:
        """The container's log lines (stdout and stderr); ends quietly when the container is gone."""
        from docker.errors import NotFound

        from falemu.runtime.logstream import BATCH_SECONDS, follow_lines

        api = self._client.api
        params = {"stdout": 1, "stderr": 1, "follow": 1 if follow else 0, "timestamps": 0, "tail": "all"}
        try:
            response = api._get(api._url("/containers/{0}/logs", container_id), params=params, stream=True)
            api._raise_for_status(response)
        except NotFound:
            return
        pause = BATCH_SECONDS if follow else 0.0
        for _stream, line in follow_lines(response, pause=pause):  # runners have no TTY: multiplexed
            yield line

    def stop(self, runner: Runner, grace: float | None = None) -> None:
        from docker.errors import APIError, NotFound

        handle = runner.handle
        if not isinstance(handle, ContainerHandle):
            return
        wait = handle.grace if grace is None else grace
        try:
            self._client.api.stop(handle.id, timeout=max(0, math.ceil(wait)))
        except NotFound:
            pass
        except APIError:
            pass  # removed below with force
        self._discard(runner)

    def _discard(self, runner: Runner) -> None:
        handle = runner.handle
        if not isinstance(handle, ContainerHandle):
            return
        self._remove_quietly(handle.id)
        if handle.direct is not None:
            addresses.release(*handle.direct)
        with self._lock:
            self._runners.pop(handle.name, None)
        self._gpus.release(handle.name)

    def _remove_quietly(self, container_id: str) -> None:
        self._api.remove(container_id)  # gone already, or its removal under way: nothing to do

    def logs(self, runner: Runner, follow: bool = False) -> Iterator[str]:
        handle = runner.handle
        if not isinstance(handle, ContainerHandle):
            return iter(())
        return self._stream_lines(handle.id, follow=follow)

    def is_alive(self, runner: Runner) -> bool:
        from docker.errors import NotFound

        handle = runner.handle
        if not isinstance(handle, ContainerHandle):
            return False
        try:
            return bool(self._client.api.inspect_container(handle.id)["State"].get("Running"))
        except NotFound:
            return False

    def runners(self) -> list[Runner]:
        with self._lock:
            return list(self._runners.values())

    def close(self) -> None:
        """Stop every runner this runtime started (in parallel, each with its grace period)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            runners = list(self._runners.values())
        threads = [threading.Thread(target=self._stop_quietly, args=(r,), daemon=True) for r in runners]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if self._gpu_probe is not None:
            self._gpu_probe.close()
        if self._sdk is not None:
            try:
                self._sdk.close()
            except Exception:
                pass

    def _stop_quietly(self, runner: Runner) -> None:
        try:
            self.stop(runner)
        except Exception:
            pass
