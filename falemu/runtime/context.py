"""The build context of a Dockerfile app, and the content hash its image is tagged with.

fal's context for pyproject apps is always the pyproject folder, filtered by its ``.dockerignore`` or,
without one, by fal's default ignore list; patterns use gitignore rules (as fal's
``DockerignoreHandler`` does with pathspec). The image tag is a hash of the Dockerfile, the path, mode
and content of every context file, and the build arguments: an unchanged app maps to an existing image.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import tarfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

# fal/container.py: DEFAULT_DOCKERIGNORE_PATTERNS (fal 1.83.0)
DEFAULT_IGNORE = (
    ".git",
    ".gitignore",
    ".dockerignore",
    "Dockerfile",
    "Dockerfile.*",
    "*.md",
    "__pycache__",
    "*.pyc",
    ".DS_Store",
    ".venv",
    "venv",
    ".env",
    "node_modules",
)
DOCKERFILE_NAME = ".falemu.Dockerfile"  # where the Dockerfile goes inside the context tar


def ignore_patterns(root: Path) -> list[str]:
    """``root/.dockerignore`` lines (comments and blanks dropped), else fal's default list."""
    path = root / ".dockerignore"
    if path.is_file():
        lines = path.read_text(encoding="utf-8").splitlines()
        return [s for line in lines if (s := line.strip()) and not s.startswith("#")]
    return list(DEFAULT_IGNORE)


class IgnoreMatcher:
    def __init__(self, patterns: Iterable[str]) -> None:
        from pathspec import PathSpec

        self._spec = PathSpec.from_lines("gitwildmatch", list(patterns))

    def ignored(self, rel: str, is_dir: bool = False) -> bool:
        return bool(self._spec.match_file(rel + "/" if is_dir else rel))


def context_files(root: Path, patterns: Iterable[str]) -> list[str]:
    """Relative POSIX paths of the files sent to the build, sorted."""
    matcher = IgnoreMatcher(patterns)
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        base = Path(dirpath).relative_to(root)
        keep = []
        for name in sorted(dirnames):
            rel = (base / name).as_posix()
            if not matcher.ignored(rel, is_dir=True):
                keep.append(name)
        dirnames[:] = keep
        for name in filenames:
            rel = (base / name).as_posix()
            if not matcher.ignored(rel):
                found.append(rel)
    return sorted(found)


_ARG = re.compile(r"^\s*ARG\s+([A-Za-z_][A-Za-z0-9_]*)", re.IGNORECASE | re.MULTILINE)


def dockerfile_args(text: str) -> set[str]:
    """Names declared with ``ARG`` in a Dockerfile."""
    return set(_ARG.findall(text))


def dockerfile_instructions(text: str) -> list[str]:
    """The Dockerfile's instructions, continuation lines joined (the classic builder counts these as steps)."""
    joined = re.sub(r"\\[ \t]*\r?\n", " ", text)
    return [s for line in joined.splitlines() if (s := line.strip()) and not s.startswith("#")]


def effective_build_args(
    build_args: Mapping[str, str], dockerfile_text: str, environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """``build_args`` with ``FALEMU_BUILD_ARG_<NAME>`` overrides for names the app or Dockerfile use."""
    env = os.environ if environ is None else environ
    args = dict(build_args)
    known = set(args) | dockerfile_args(dockerfile_text)
    prefix = "FALEMU_BUILD_ARG_"
    for key, value in env.items():
        if key.startswith(prefix) and key[len(prefix) :] in known:
            args[key[len(prefix) :]] = value
    return args


@dataclass(frozen=True)
class BuildContext:
    root: Path
    dockerfile_text: str
    files: tuple[str, ...]
    build_args: Mapping[str, str]
    digest: str  # sha256 hex of everything that goes into the image

    def tar(self) -> io.BytesIO:
        """The context as an uncompressed tar, with the Dockerfile added as :data:`DOCKERFILE_NAME`."""
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for rel in self.files:
                info = tar.gettarinfo(str(self.root / rel), arcname=rel)
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                info.mtime = 0
                if info.isfile():
                    with open(self.root / rel, "rb") as fh:
                        tar.addfile(info, fh)
                else:
                    tar.addfile(info)
            data = self.dockerfile_text.encode()
            info = tarfile.TarInfo(DOCKERFILE_NAME)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        buf.seek(0)
        return buf


def load_context(root: Path, dockerfile: Path, build_args: Mapping[str, str]) -> BuildContext:
    text = dockerfile.read_text(encoding="utf-8")
    return make_context(root, text, context_files(root, ignore_patterns(root)), build_args)


def selected_files(root: Path, sources: Iterable[str], patterns: Iterable[str]) -> list[str]:
    """The context files the Dockerfile's COPY/ADD ``sources`` name (what fal sends for a ContainerImage).

    A source is a file, a folder (everything under it), a glob, or ``.`` (the whole context); files the
    ignore ``patterns`` exclude are left out, as fal's file sync leaves them out.
    """
    import fnmatch

    wanted = [s.strip().removeprefix("./").rstrip("/") for s in sources]
    if not wanted:
        return []
    everything = any(s in ("", ".") for s in wanted)
    if not everything and not any(any(c in s for c in "*?[") for s in wanted):
        # Plain paths only: walk just those, not the whole folder (it may be a large repository).
        found: set[str] = set()
        matcher = IgnoreMatcher(patterns)
        for source in wanted:
            path = root / source
            if path.is_file() and not matcher.ignored(source):
                found.add(source)
            elif path.is_dir():
                found.update(f"{source}/{rel}" for rel in context_files(path, patterns))
        return sorted(f for f in found if not matcher.ignored(f))
    files = context_files(root, patterns)
    if everything:
        return files
    chosen = []
    for rel in files:
        parts = rel.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(prefix == s or fnmatch.fnmatchcase(prefix, s) for s in wanted for prefix in prefixes):
            chosen.append(rel)
    return chosen


def make_context(root: Path, text: str, files: Iterable[str], build_args: Mapping[str, str]) -> BuildContext:
    """A context of ``files`` (relative to ``root``) and the Dockerfile ``text``, with its content hash."""
    files = sorted(files)
    digest = hashlib.sha256()
    digest.update(b"dockerfile\0" + text.encode() + b"\0")
    for key in sorted(build_args):
        digest.update(f"arg\0{key}={build_args[key]}\0".encode())
    for rel in files:
        path = root / rel
        st = path.lstat()
        digest.update(f"file\0{rel}\0{st.st_mode & 0o777 | (st.st_mode & 0o170000)}\0".encode())
        if path.is_symlink():
            digest.update(os.readlink(path).encode())
        elif path.is_file():
            with open(path, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(chunk)
        digest.update(b"\0")
    return BuildContext(root, text, tuple(files), dict(build_args), digest.hexdigest())
