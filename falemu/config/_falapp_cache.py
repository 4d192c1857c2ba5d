"""A cache of what fal's loader read from a fal.App, so an unchanged App starts without loading it again.

fal's loader runs the App's module in a child interpreter that imports the fal SDK: about a second on a
quiet machine, many on a busy one, on every ``falemu up`` / ``check`` / ``config show``. Its answer
depends only on what the module sees when it runs, so it is kept under a key made of all of that:

* the loader script itself, the Python version and the installed fal's version;
* the arguments (file, class, pyproject table) and the current folder;
* the bytes of the ref file, every other ``.py`` file below its folder (the modules it may import)
  and the pyproject;
* the environment the module runs in (a module may read a variable at import), without variables that
  change from one shell, terminal or SSH login to the next and cannot matter (``PWD``, ``SHLVL``,
  ``SSH_CONNECTION``, ``TMUX_PANE``, ...) and without falemu's own settings (``FALEMU_*``).

A change to any of them is a new key, so a stale answer is never used; what the module might read from
elsewhere (other files, the network) at import is not covered, and ``FALEMU_FALAPP_CACHE=0`` turns the
cache off. Only successful loads are kept. Entries live in ``<cache dir>/falapp/`` and are small JSON.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from falemu.prelaunch import stable_env

MAX_FILES = 2000  # a folder with more Python files than this is not cached (hashing it costs too much)
MAX_ENTRIES = 50_000  # nor one whose walk meets more files than this
_SKIP_DIRS = frozenset({".git", ".venv", "venv", "node_modules", "__pycache__", ".tox", ".mypy_cache", "build", "dist"})


def enabled(environ: Mapping[str, str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    return env.get("FALEMU_FALAPP_CACHE", "1").strip().lower() not in ("0", "false", "no", "off")


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "falemu" / "falapp"


def _fal_version() -> str:
    """Which fal is installed: its version file's path, size and time (``importlib.metadata`` would take
    50 ms to say the version; a reinstall of fal, any version, rewrites that file)."""
    try:
        from importlib.util import find_spec

        spec = find_spec("fal")
        if spec is None or not spec.submodule_search_locations:
            return "?"
        folder = Path(next(iter(spec.submodule_search_locations)))
        version_file = folder / "_fal_version.py"
        found = version_file if version_file.exists() else folder / "__init__.py"
        stat = found.stat()
        return f"{found}:{stat.st_size}:{stat.st_mtime_ns}"
    except Exception:
        return "?"


def source_files(folder: Path, suffix: str = ".py") -> list[Path] | None:
    """The files below ``folder`` whose names end with ``suffix`` (tools' and VCS folders left out), or
    None when there are more than :data:`MAX_FILES` of them (or :data:`MAX_ENTRIES` files in all)."""
    found: list[Path] = []
    seen = 0
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS and not d.startswith("."))
        seen += len(files)
        if seen > MAX_ENTRIES:
            return None
        for name in sorted(files):
            if name.endswith(suffix):
                found.append(Path(root) / name)
                if len(found) > MAX_FILES:
                    return None
    return found


def key(probe: str, args: Mapping[str, Any], file: Path, cwd: Path, env: Mapping[str, str]) -> str | None:
    """The cache key of one load, or None when it cannot be made cheaply (then the loader just runs)."""
    files = source_files(file.parent)
    if files is None:
        return None
    digest = hashlib.sha256()

    def part(label: str, data: bytes) -> None:
        digest.update(label.encode() + b"\0" + str(len(data)).encode() + b"\0" + data)

    part("probe", probe.encode())
    part("python", sys.version.encode() + sys.executable.encode())
    part("fal", _fal_version().encode())
    part("args", json.dumps(dict(args), sort_keys=True).encode())
    part("cwd", str(cwd).encode())
    toml = args.get("toml")
    extra = [Path(toml)] if isinstance(toml, str) else []
    try:
        for path in [*files, *extra]:
            part(str(path), path.read_bytes())
    except OSError:
        return None
    kept = stable_env(env, ("FALEMU_",))
    part("env", json.dumps(kept, sort_keys=True).encode())
    return digest.hexdigest()


def get(entry: str) -> dict[str, Any] | None:
    try:
        data: Any = json.loads((cache_dir() / f"{entry}.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("ok") else None


def put(entry: str, result: dict[str, Any]) -> None:
    """Keep a successful load (atomically; a cache that cannot be written is no error)."""
    if not result.get("ok"):
        return
    folder = cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".entry-")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(result, fh)
        os.replace(tmp, folder / f"{entry}.json")
    except OSError:
        return
