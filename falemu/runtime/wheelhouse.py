"""Wheels for an image's Python, downloaded on this machine so image builds need no network.

fal.App images get the fal SDK, fal's serve requirements and the app's requirements from a folder of
wheels that ``pip download`` fills on the host (where PyPI, a mirror or a proxy answers) for the
image's Python version and platform: ``--only-binary=:all: --python-version X.Y --platform
manylinux_2_N_<arch> ...``. The pip wheel itself is part of it, so an image without pip (Debian's
python3) installs with ``python3 /wheels/pip-*.whl/pip install --no-index --find-links /wheels``.

Wheelhouses live under ``<cache>/wheels/<key>``, the key a hash of the requirements and the target;
a complete one is never downloaded again. pip's own index settings (``PIP_INDEX_URL``, pip.conf,
``HTTPS_PROXY``) apply.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from falemu.errors import ImageError
from falemu.events import BuildOutput, EventSink, Notice

COMPLETE = ".complete"


@dataclass(frozen=True)
class Target:
    """The Python an image runs: wheels must match its version, implementation and platform."""

    python: str  # "3.11"
    machine: str  # x86_64, aarch64
    glibc: str  # "2.36"

    @property
    def abi(self) -> str:
        return "cp" + self.python.replace(".", "")

    def platforms(self) -> list[str]:
        """manylinux tags this glibc runs, newest first (pip does not expand ``manylinux_2_N`` itself)."""
        major, minor = (int(p) for p in self.glibc.split(".")[:2])
        tags = [f"manylinux_{major}_{m}_{self.machine}" for m in range(minor, 16, -1)] if major == 2 else []
        if major > 2 or minor >= 17:
            tags.append(f"manylinux2014_{self.machine}")  # pip adds manylinux2010 and manylinux1 to it
        return tags

    def describe(self) -> str:
        return f"Python {self.python} (glibc {self.glibc}, {self.machine})"


def wheelhouse_key(layers: Sequence[Sequence[str]], target: Target) -> str:
    data = json.dumps({"layers": [list(layer) for layer in layers], "target": target.__dict__}, sort_keys=True)
    return hashlib.sha256(data.encode()).hexdigest()[:20]


def pip_wheel(folder: Path) -> str:
    """The file name of the pip wheel in ``folder``."""
    for path in sorted(folder.glob("pip-*.whl")):
        return path.name
    raise ImageError(f"the wheelhouse {folder} has no pip wheel", hint=f"remove {folder} and run again")


def ensure_wheelhouse(
    layers: Sequence[Sequence[str]],
    target: Target,
    cache_dir: Path,
    *,
    app: str,
    events: EventSink,
) -> Path:
    """A folder with wheels for every requirement of ``layers`` (and pip) for ``target``; cached."""
    folder = cache_dir / "wheels" / wheelhouse_key(layers, target)
    if (folder / COMPLETE).is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    count = sum(len(layer) for layer in layers)
    events(
        Notice(
            app,
            level="info",
            message=f"downloading wheels for {count} requirement(s) and their dependencies for "
            f"{target.describe()} into {folder} (first time only; later builds reuse them)",
        )
    )
    tmp = Path(tempfile.mkdtemp(prefix=".download-", dir=folder.parent))
    try:
        for index, layer in enumerate(layers):
            extra = ["pip"] if index == 0 else []
            _download([*layer, *extra], target, tmp, app=app, events=events)
        (tmp / COMPLETE).write_text(json.dumps({"layers": [list(x) for x in layers], "target": target.__dict__}))
        try:
            tmp.rename(folder)
        except OSError:  # another falemu finished the same wheelhouse meanwhile
            if not (folder / COMPLETE).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _download(requirements: Sequence[str], target: Target, dest: Path, *, app: str, events: EventSink) -> None:
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--disable-pip-version-check",
        "--progress-bar",
        "off",
        "--dest",
        str(dest),
        "--only-binary=:all:",
        "--python-version",
        target.python,
        "--implementation",
        "cp",
        "--abi",
        target.abi,
    ]
    for platform in target.platforms():
        command += ["--platform", platform]
    command += list(requirements)
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    try:
        proc = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, stdin=subprocess.DEVNULL
        )
    except OSError as exc:
        raise ImageError(
            f"cannot run pip to download wheels: {exc.strerror}", hint="falemu needs pip in its own environment"
        ) from None
    assert proc.stdout is not None
    tail: deque[str] = deque(maxlen=30)
    found = 0
    last_note = time.monotonic()
    for raw in proc.stdout:
        line = raw.rstrip()
        if not line:
            continue
        tail.append(line)
        events(BuildOutput(app, line=line))
        if line.startswith("Collecting "):
            found += 1
            if time.monotonic() - last_note >= 5:
                last_note = time.monotonic()
                events(Notice(app, level="info", message=f"downloading wheels: {found} packages so far"))
    code = proc.wait()
    if code == 0:
        return
    if any("No module named pip" in line for line in tail):
        raise ImageError("pip is not installed in falemu's Python environment", hint="python -m ensurepip")
    reason = next((line for line in reversed(tail) if line.startswith("ERROR")), f"pip exited with code {code}")
    network = any(("Could not fetch" in line or "NewConnectionError" in line or "ProxyError" in line) for line in tail)
    if network:
        hint = (
            "pip on this machine could not reach the package index; set HTTPS_PROXY or PIP_INDEX_URL as for "
            "`pip install`, or run once where the index answers (the wheels are cached)"
        )
    elif "from versions: none" in reason or "No matching distribution" in reason:
        hint = (
            f"there is no wheel of that requirement for {target.describe()}: falemu installs only wheels, "
            "so the image build needs no network; pin a version that has one, or install it in the Dockerfile"
        )
    else:
        hint = "pip's last lines:\n  " + "\n  ".join(list(tail)[-8:])
    raise ImageError(f"downloading wheels for {', '.join(requirements)} failed: {reason}", hint=hint)
