"""GPU device requests and which runner holds which GPU.

Runners of ``GPU-*`` machine types (or with ``num_gpus``) ask the engine for NVIDIA GPUs through the
Engine API's device requests. When the number of GPUs on the engine is known (``FALEMU_GPU_COUNT``,
or ``nvidia-smi -L`` for a local engine), each runner gets its own device ids, like runners on
separate fal machines; when they run out, ``--gpu require`` fails and ``auto`` shares the least used
GPUs with a warning. When the count is unknown, runners ask for a number of GPUs and the engine picks.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any

from falemu.errors import GpuUnavailable
from falemu.events import EventSink, Notice
from falemu.runtime.base import RunnerSpec

NO_GPU_DRIVER = 'could not select device driver ""'


def is_no_gpu_error(text: str) -> bool:
    """The engine's answer when it has no NVIDIA runtime: ``could not select device driver "" ...``."""
    return NO_GPU_DRIVER in text or "could not select device driver" in text


@dataclass(frozen=True)
class HostGpus:
    """What ``nvidia-smi -L`` says about this machine's GPUs.

    ``names`` lists one line per GPU (``GPU 0: NVIDIA A100-SXM4-40GB (UUID: ...)``); it is None when
    nvidia-smi is missing or fails, and ``problem`` then says why.
    """

    names: tuple[str, ...] | None
    problem: str | None = None

    @property
    def count(self) -> int | None:
        return None if self.names is None else len(self.names)


def list_host_gpus() -> HostGpus:
    """The GPUs the NVIDIA driver of this machine sees, whether or not a container engine runs."""
    if shutil.which("nvidia-smi") is None:
        return HostGpus(None, "nvidia-smi is not on PATH (no NVIDIA driver here)")
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        return HostGpus(None, f"nvidia-smi could not run: {exc}")
    if out.returncode != 0:
        said = (out.stdout + out.stderr).strip().splitlines()
        return HostGpus(None, f"nvidia-smi failed: {said[0] if said else f'exit code {out.returncode}'}")
    return HostGpus(tuple(line.strip() for line in out.stdout.splitlines() if line.startswith("GPU ")))


def detect_gpu_count(local_engine: bool) -> int | None:
    """GPUs on the engine: ``$FALEMU_GPU_COUNT``, else ``nvidia-smi -L`` when the engine is local."""
    override = os.environ.get("FALEMU_GPU_COUNT", "").strip()
    if override.isdigit():
        return int(override)
    if not local_engine:
        return None
    return list_host_gpus().count


@dataclass(frozen=True)
class GpuGrant:
    """What one runner asked the engine for: explicit ids, or a count when ids are unknown."""

    count: int
    device_ids: tuple[str, ...] = ()
    shared: bool = False  # True when some ids are also held by another runner

    def device_request(self) -> dict[str, Any]:
        """The Engine API's ``DeviceRequest`` (what ``docker run --gpus`` sends)."""
        request: dict[str, Any] = {
            "Driver": "",
            "Count": 0,
            "DeviceIDs": None,
            "Capabilities": [["gpu"]],
            "Options": {},
        }
        if self.device_ids:
            request["DeviceIDs"] = list(self.device_ids)
        else:
            request["Count"] = self.count
        return request


class GpuAllocator:
    """Thread-safe bookkeeping of GPU ids held by runners."""

    def __init__(self, total: int | None) -> None:
        self.total = total
        self._held: dict[str, tuple[str, ...]] = {}
        self._lock = threading.Lock()

    def allocate(self, runner: str, count: int) -> GpuGrant:
        """Free ids for ``runner``; the least used ones (``shared=True``) when too few are free.

        Raises ``ValueError`` when the engine has fewer GPUs than one runner needs.
        """
        if self.total is None:
            return GpuGrant(count=count)
        if count > self.total:
            raise ValueError(f"the app needs {count} GPUs per runner but the engine has {self.total}")
        with self._lock:
            use = Counter({str(i): 0 for i in range(self.total)})
            for holder, ids in self._held.items():
                if holder != runner:  # a runner asking again replaces its own hold
                    use.update(ids)
            ranked = sorted(use, key=lambda gpu: (use[gpu], int(gpu)))
            chosen = tuple(sorted(ranked[:count], key=int))
            shared = any(use[gpu] for gpu in chosen)
            self._held[runner] = chosen
            return GpuGrant(count=count, device_ids=chosen, shared=shared)

    def free_count(self) -> int | None:
        if self.total is None:
            return None
        with self._lock:
            held = {gpu for ids in self._held.values() for gpu in ids}
        return self.total - len(held)

    def release(self, runner: str) -> None:
        with self._lock:
            self._held.pop(runner, None)


class GpuPolicy:
    """What ``--gpu auto|require|off`` means for each runner start, on one engine.

    ``auto`` falls back to CPU with one warning per runtime when the engine refuses GPUs, and shares
    the least used GPUs (with a warning) when there are too few; ``require`` raises
    :class:`~falemu.errors.GpuUnavailable` in both cases; ``off`` never asks for GPUs.
    """

    def __init__(self, allocator: GpuAllocator) -> None:
        self.allocator = allocator
        self.engine_refuses = False
        self._warned = False
        self._lock = threading.Lock()

    @property
    def total(self) -> int | None:
        return self.allocator.total

    def release(self, runner: str) -> None:
        self.allocator.release(runner)

    def plan(self, spec: RunnerSpec, events: EventSink, key: str) -> GpuGrant | None:
        """The GPUs to request for ``spec``'s runner (held under ``key``), or None for a CPU runner."""
        app = spec.prepared.app
        if not app.wants_gpu or spec.gpu == "off":
            return None
        if self.engine_refuses:
            if spec.gpu == "require":
                raise GpuUnavailable(
                    f"{app.alias} needs {app.gpu_count} GPU(s) and the engine cannot give GPUs",
                    hint="install the NVIDIA Container Toolkit on the engine's host, or run with --gpu auto",
                )
            return None
        try:
            grant = self.allocator.allocate(key, app.gpu_count)
        except ValueError as exc:
            if spec.gpu == "require":
                raise GpuUnavailable(f"{app.alias}: {exc}", hint="lower num_gpus, or run with --gpu auto") from None
            total = self.allocator.total or 0
            events(Notice(app.alias, level="warning", message=f"{exc}; runner {spec.runner_id} gets all {total}"))
            if total == 0:
                return None
            grant = self.allocator.allocate(key, total)
        if grant.shared:
            if spec.gpu == "require":
                self.allocator.release(key)
                raise GpuUnavailable(
                    f"{app.alias}: every GPU of the engine ({self.allocator.total}) is held by another runner",
                    hint="lower max_concurrency, stop other runners, or run with --gpu auto to share GPUs",
                )
            ids = ",".join(grant.device_ids)
            events(
                Notice(
                    app.alias,
                    level="warning",
                    message=f"not enough free GPUs: runner {spec.runner_id} shares GPU {ids} with another runner",
                )
            )
        return grant

    def refused(self, spec: RunnerSpec, events: EventSink, reason: str, key: str) -> None:
        """The engine answered that it cannot give GPUs: fail under ``require``, else warn once."""
        app = spec.prepared.app
        self.allocator.release(key)
        with self._lock:
            self.engine_refuses = True
            warn = not self._warned
            self._warned = True
        if spec.gpu == "require":
            raise GpuUnavailable(
                f"{app.alias} needs {app.gpu_count} GPU(s) and the engine cannot give GPUs ({reason})",
                hint="install the NVIDIA Container Toolkit on the engine's host, or run with --gpu auto",
            )
        if warn:
            events(
                Notice(
                    app.alias,
                    level="warning",
                    message=f"the Docker engine cannot give GPUs ({reason}); GPU runners start on CPU "
                    "(use --gpu require to fail instead, --gpu off to silence this)",
                )
            )
