"""Where a project's queue is stored, and the lock that keeps it to one ``falemu up`` at a time.

Each project (its folder) and owner has its own store in falemu's cache folder::

    $XDG_CACHE_HOME/falemu/queue/<folder name>-<owner>-<hash of folder and owner>/
        queue.sqlite3 (+ -wal, -shm)   the requests, their state and small bodies
        bodies/                        bodies and results over 64 KiB, one file each
        lock                           held by the falemu up that serves the queue (its pid inside)

It is never inside the data folder runners see at ``/data``. The lock is an ``flock`` on ``lock``:
the OS releases it when its process ends, however it ends, so a killed ``falemu up`` never leaves a
stale lock behind. A second ``falemu up`` of the same project and owner fails at once with one line
naming the first one's pid; sharing one queue between two gateways would hand a request to both.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
from pathlib import Path

from falemu.config.settings import cache_dir
from falemu.errors import ConfigError, UsageError


def queue_dir(project_root: Path, owner: str) -> Path:
    """The store folder of the project in ``project_root`` served under ``owner``."""
    root = project_root.resolve()
    digest = hashlib.sha256(f"{root}\0{owner}".encode()).hexdigest()[:12]
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", root.name)[:40] or "project"
    return cache_dir() / "queue" / f"{name}-{owner}-{digest}"


def check_outside(folder: Path, data_dir: Path) -> None:
    """Runners see ``data_dir`` at /data: falemu's own database must not be in it."""
    data = data_dir.expanduser().resolve()
    where = folder.resolve()
    if where == data or data in where.parents:
        raise ConfigError(
            f"the data folder {data} (mounted at /data in every runner) contains falemu's queue store {where}",
            hint="give data_dir a folder of its own (FALEMU_DATA_DIR or --data-dir), e.g. ~/.cache/falemu/data",
        )


class StoreLock:
    """An exclusive ``flock`` on ``<folder>/lock`` for the life of this process (or :meth:`release`)."""

    def __init__(self, fd: int, path: Path) -> None:
        self._fd: int | None = fd
        self.path = path

    @classmethod
    def acquire(cls, folder: Path) -> StoreLock:
        path = folder / "lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = ""
            with contextlib.suppress(OSError, ValueError):
                holder = os.pread(fd, 64, 0).decode().strip()
            os.close(fd)
            who = f"another falemu up (pid {holder})" if holder.isdigit() else "another falemu up"
            raise UsageError(
                f"the queue of this project is in use by {who}: {folder}",
                hint="stop that one first (see `falemu ps`), or serve this project under another --owner",
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(fd, path)

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
