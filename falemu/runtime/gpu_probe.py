"""Whether a local engine on a host without NVIDIA driver gives GPUs, learned before the first GPU runner.

The engine checks a container's GPU request only when it starts it, after it has set up the container's
network: a runner's own start would fail after that work and be started again on CPU. This module asks
with a container without network whose entrypoint does not exist, which the engine refuses as it would
refuse the runner, in a few tens of milliseconds; :class:`GpuProbe` asks once per runtime, in a thread,
as soon as a GPU app's image is ready, so the answer is there when its first runner starts. The answer
goes to the GPU policy as the runner's own would have (a warning, or GpuUnavailable under
``--gpu require``); any answer but a refusal leaves the decision to the runner's own start.

A refusal is remembered in falemu's cache for a day, under a key of what the engine says about itself
(its id, version, runtimes, kernel and CDI folders): on a host without NVIDIA driver the engine's answer
does not change until one of them does, so the next ``falemu up`` does not ask again. A host that gets a
driver gets ``nvidia-smi`` too, and then nothing here is asked or remembered.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import json
import os
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from falemu.runtime import labels
from falemu.runtime.engine import first_line
from falemu.runtime.engine_api import EngineAPI, EngineCallError
from falemu.runtime.gpu import GpuGrant, is_no_gpu_error

REMEMBER_SECONDS = 24 * 3600
_ENGINE_FIELDS = ("ID", "ServerVersion", "Runtimes", "DefaultRuntime", "KernelVersion", "CDISpecDirs", "Name")


def memory_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "falemu" / "engines"


def _memory_path(info: Mapping[str, Any]) -> Path | None:
    if not info.get("ID"):
        return None
    described = json.dumps({field: info.get(field) for field in _ENGINE_FIELDS}, sort_keys=True, default=str)
    return memory_dir() / f"gpu-{hashlib.sha256(described.encode()).hexdigest()[:32]}.json"


def remembered_refusal(info: Mapping[str, Any], now: float | None = None) -> str | None:
    """The engine's reason, when it refused GPUs less than a day ago and still describes itself alike."""
    path = _memory_path(info)
    if path is None:
        return None
    try:
        data: Any = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    now = time.time() if now is None else now
    if not isinstance(data, dict) or not isinstance(data.get("refused"), str):
        return None
    at = data.get("at")
    if not isinstance(at, int | float) or not 0 <= now - at < REMEMBER_SECONDS:
        return None
    return str(data["refused"])


def remember_refusal(info: Mapping[str, Any], reason: str) -> None:
    """Keep the engine's refusal (atomically; a cache that cannot be written is no error)."""
    path = _memory_path(info)
    if path is None:
        return
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".gpu-")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump({"refused": reason, "at": time.time()}, fh)
        os.replace(tmp, path)


class GpuProbe:
    """One runtime's question to its engine: does it refuse GPUs (its reason) or not (None)?"""

    def __init__(
        self, api: EngineAPI, engine_info: Callable[[], Mapping[str, Any]], remove: Callable[[str], None]
    ) -> None:
        self._api = api
        self._engine_info = engine_info
        self._remove = remove
        self._lock = threading.Lock()
        self._answer: concurrent.futures.Future[str | None] | None = None
        self._thread: threading.Thread | None = None

    def ask(
        self, alias: str, image: str, gpu_count: int, project_root: Path | str | None
    ) -> concurrent.futures.Future[str | None]:
        """The answer, remembered or asked once (in a thread, with ``image``); later calls share it."""
        with self._lock:
            answer = self._answer
            if answer is not None:
                return answer
            answer = self._answer = concurrent.futures.Future()
            try:
                info = self._engine_info()
            except Exception:
                info = {}
            remembered = remembered_refusal(info)
            if remembered is not None:
                answer.set_result(remembered)
                return answer
            self._thread = threading.Thread(
                target=self._probe,
                args=(info, alias, image, gpu_count, project_root, answer),
                name="falemu-gpu-probe",
                daemon=True,
            )
            self._thread.start()
            return answer

    def _probe(
        self,
        info: Mapping[str, Any],
        alias: str,
        image: str,
        gpu_count: int,
        project_root: Path | str | None,
        answer: concurrent.futures.Future[str | None],
    ) -> None:
        from falemu.runtime.docker import container_name

        refused: str | None = None
        container_id: str | None = None
        config = {
            "Image": image,
            "Entrypoint": ["/falemu-gpu-probe"],
            "Cmd": [],
            "Labels": labels.runner_labels(alias, "gpu-probe", project_root),
            "HostConfig": {"NetworkMode": "none", "DeviceRequests": [GpuGrant(max(1, gpu_count)).device_request()]},
        }
        try:
            container_id = self._api.create(container_name(alias, "gpu-probe"), config)
            self._api.start(container_id)
        except EngineCallError as exc:
            text = first_line(exc.explanation)
            if is_no_gpu_error(text):
                refused = text
        except Exception:
            pass
        finally:
            answer.set_result(refused)  # before the clean-up: nobody waits for that
            if refused is not None:
                remember_refusal(info, refused)
            if container_id is not None:
                with contextlib.suppress(Exception):
                    self._remove(container_id)

    def close(self, timeout: float = 30.0) -> None:
        """Wait for a probe under way (it removes its container)."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
