"""Bodies of queued requests and their results: in memory when small, in a file when not.

A :class:`Spool` takes a body as it arrives. The first :data:`SPILL_THRESHOLD` bytes stay in memory;
past that everything goes to a file in the store's ``bodies`` folder, so a queued 100 MB upload costs
the gateway a file, not 100 MB of memory. A limit makes the spool raise :class:`BodyTooLarge` as soon
as the running total passes it. A :class:`Body` is the finished result: its bytes, or the file
holding them, read back in chunks when the request goes to a runner or the result to a caller.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

SPILL_THRESHOLD = 64 * 1024  # bodies larger than this live in a file
CHUNK = 256 * 1024  # bytes read from a body file at a time


@dataclass(frozen=True, slots=True)
class Body:
    """A request or result body: ``data`` in memory, or ``size`` bytes in the file at ``path``."""

    data: bytes = b""
    path: Path | None = None
    size: int = 0

    @classmethod
    def of(cls, data: bytes) -> Body:
        return cls(data=data, size=len(data))

    @property
    def in_file(self) -> bool:
        return self.path is not None

    def __len__(self) -> int:
        return self.size

    async def chunks(self, chunk: int = CHUNK) -> AsyncIterator[bytes]:
        """The body in parts; a file is read ``chunk`` bytes at a time (from the page cache, quickly)."""
        if self.path is None:
            if self.data:
                yield self.data
            return
        with open(self.path, "rb") as fh:
            while part := fh.read(chunk):
                yield part

    def read(self) -> bytes:
        """The whole body in memory (for a webhook's payload)."""
        if self.path is None:
            return self.data
        return self.path.read_bytes()

    def head(self, n: int) -> bytes:
        """The first ``n`` bytes."""
        if self.path is None:
            return self.data[:n]
        with open(self.path, "rb") as fh:
            return fh.read(n)

    def remove(self) -> None:
        """Delete the body's file, if it has one."""
        if self.path is not None:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()


EMPTY = Body()


class BodyTooLarge(Exception):
    """A body passed the spool's limit (bytes)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"body larger than {limit} bytes")
        self.limit = limit


class Spool:
    """Collects a body as it arrives: memory up to ``threshold`` bytes, then the file ``folder/name``.

    ``limit`` (bytes, None for none) is checked on every write: the write that passes it raises
    :class:`BodyTooLarge` and the spool is discarded.
    """

    def __init__(self, folder: Path, name: str, *, threshold: int = SPILL_THRESHOLD, limit: int | None = None) -> None:
        self.folder = folder
        self.name = name
        self.threshold = threshold
        self.limit = limit
        self.size = 0
        self._parts: list[bytes] = []
        self._file: BinaryIO | None = None

    @property
    def path(self) -> Path:
        return self.folder / self.name

    def write(self, chunk: bytes) -> None:
        if not chunk:
            return
        self.size += len(chunk)
        if self.limit is not None and self.size > self.limit:
            self.discard()
            raise BodyTooLarge(self.limit)
        if self._file is None:
            self._parts.append(chunk)
            if self.size <= self.threshold:
                return
            self.folder.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "wb")  # noqa: SIM115 - closed in finish() or discard()
            parts, self._parts = self._parts, []
            self._file.writelines(parts)
            return
        self._file.write(chunk)

    def finish(self) -> Body:
        """The body collected; a file is flushed to the OS (no fsync: a clean stop keeps it)."""
        if self._file is None:
            data = b"".join(self._parts)
            self._parts = []
            return Body.of(data)
        self._file.close()
        self._file = None
        return Body(path=self.path, size=self.size)

    def discard(self) -> None:
        self._parts = []
        if self._file is not None:
            self._file.close()
            self._file = None
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
