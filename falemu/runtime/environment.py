"""What a runner gets from the platform: its environment, secrets, ``/data`` and machine size.

fal sets ``FAL_APP_NAME=<owner>/<app>``, ``FAL_JOB_ID``, ``FAL_RUNNER_STATE`` and
``HF_HOME=/data/.cache/huggingface`` on its runners and mounts the shared ``/data`` volume;
``secrets`` named by the app are injected as environment variables. Locally their values come from
the environment of falemu or from a ``.env`` file in the project folder, and they are never printed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from falemu.config.model import AppConfig

DATA = "/data"


@dataclass(frozen=True)
class Machine:
    cpus: float
    memory_mb: int
    gpu_memory_gb: int = 0


# fal's machine types (docs, "machine types"): CPU cores, RAM and GPU memory per runner.
MACHINES: dict[str, Machine] = {
    "XS": Machine(0.5, 512),
    "S": Machine(1, 1024),
    "M": Machine(2, 2048),
    "L": Machine(4, 15 * 1024),
    "XL": Machine(8, 30 * 1024),
    "GPU-RTX4090": Machine(12, 48 * 1024, 24),
    "GPU-RTX5090": Machine(14, 60 * 1024, 32),
    "GPU-A100": Machine(12, 60 * 1024, 40),
    "GPU-A6000": Machine(10, 18 * 1024, 48),
    "GPU-L40": Machine(6, 100 * 1024, 48),
    "GPU-H100": Machine(12, 112 * 1024, 80),
    "GPU-H200": Machine(12, 112 * 1024, 141),
    "GPU-B200": Machine(19, 210 * 1024, 192),
}


def machine_for(app: AppConfig) -> tuple[str, Machine | None]:
    """The app's first machine type (fal tries them in order) and its size, None when unknown."""
    name = app.machine_types[0] if app.machine_types else "XS"
    return name, MACHINES.get(name.upper())


def read_dotenv(path: Path) -> dict[str, str]:
    """``KEY=value`` lines of a ``.env`` file (``export``, quotes and comments allowed)."""
    values: dict[str, str] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return values
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        if line.startswith("export "):
            line = line[len("export ") :].lstrip()
        key, _, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        elif " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        if key:
            values[key] = value
    return values


def resolve_secrets(app: AppConfig, environ: Mapping[str, str] | None = None) -> tuple[dict[str, str], list[str]]:
    """The app's secrets as ``name -> value`` and the names found nowhere.

    The environment of falemu wins over the project's ``.env`` file.
    """
    env = os.environ if environ is None else environ
    dotenv: dict[str, str] | None = None
    found: dict[str, str] = {}
    missing: list[str] = []
    for name in app.secrets:
        if name in env:
            found[name] = env[name]
            continue
        if dotenv is None:
            dotenv = read_dotenv(app.project_root / ".env")
        if name in dotenv:
            found[name] = dotenv[name]
        else:
            missing.append(name)
    return found, missing


def runner_environment(
    app: AppConfig,
    *,
    owner: str,
    runner_id: str,
    data_path: str = DATA,
    secrets: Mapping[str, str] | None = None,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment fal gives a runner; ``data_path`` is where ``/data`` is seen by the runner."""
    env = {
        "FAL_APP_NAME": f"{owner}/{app.alias}",
        "FAL_JOB_ID": runner_id,
        "FAL_RUNNER_ID": runner_id,
        "FAL_RUNNER_STATE": "SETUP",
        "FAL_PERSISTENT_DIR": data_path,
        "HF_HOME": f"{data_path}/.cache/huggingface",
    }
    env.update(secrets or {})
    env.update(extra or {})
    return env


def data_binds(app: AppConfig, data_dir: Path) -> dict[str, str]:
    """Host folder -> container path for ``/data``, honouring ``data_mounts``.

    ``None`` (fal's default) and ``["/data"]`` mount all of it; ``["/data/.cache"]`` only that part.
    Host folders are created so the engine does not create them owned by root.
    """
    mounts = app.data_mounts if app.data_mounts is not None else (DATA,)
    binds: dict[str, str] = {}
    for mount in mounts:
        target = "/" + mount.strip("/")
        if target != DATA and not target.startswith(DATA + "/"):
            continue
        host = data_dir / target[len(DATA) :].lstrip("/") if target != DATA else data_dir
        host.mkdir(parents=True, exist_ok=True)
        binds[str(host.resolve())] = target
    return binds
