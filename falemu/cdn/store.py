"""The local CDN's file store: uploaded bytes on disk, with their content type, kept across runs.

Layout under the store's root (``~/.cache/falemu/files`` by default, a sibling of the ``data`` folder
runners see as ``/data``, never inside it)::

    <word>/<id>.<ext>            the bytes, exactly as uploaded
    <word>/.<id>.<ext>.json      content type, file name, size, upload time, expiry
    .incoming/                   uploads in progress (renamed into place when complete)

A file's *key* is ``<word>/<id>.<ext>``, the tail of its URL (``.../files/<word>/<id>.<ext>``, the shape
of fal's CDN URLs). ``<word>`` is a short animal name as on fal's CDN, ``<id>`` 22 random URL-safe
characters (128 bits): a URL cannot be guessed from another. A file becomes visible only once its
metadata and its bytes are both in place (an interrupted upload leaves nothing behind but a stray
file under ``.incoming``, removed at the next start).

Files are kept until their upload's lifecycle preference (``expiration_duration_seconds``) runs out, or
until the folder is removed; an expired file answers 404 and is deleted when next asked for or at the
next start.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import mimetypes
import os
import re
import secrets
import shutil
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO

WORDS = (
    "elephant", "fox", "kangaroo", "koala", "lion", "monkey", "panda", "penguin", "rabbit", "tiger",
    "zebra", "owl", "otter", "lemur", "gorilla", "giraffe", "hippo", "rhino", "wolf", "bear",
    "badger", "beaver", "bison", "camel", "cheetah", "dolphin", "eagle", "falcon", "ferret", "gecko",
    "hedgehog", "jaguar", "llama", "lynx", "meerkat", "moose", "ostrich", "panther", "parrot", "puma",
    "raccoon", "seal", "sloth", "squirrel", "swan", "toucan", "turtle", "walrus", "yak", "koi",
)  # fmt: skip
DEFAULT_CONTENT_TYPE = "application/octet-stream"
INCOMING = ".incoming"
_KEY = re.compile(r"([a-z]{2,16})/([A-Za-z0-9_-]{16,64})(\.[A-Za-z0-9]{1,16})?")
_EXT = re.compile(r"\.[A-Za-z0-9]{1,16}")
_COPY_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class StoredFile:
    """A file in the store: its key, where its bytes are, and what it was uploaded as."""

    key: str
    path: Path
    content_type: str
    file_name: str
    size: int
    created: float
    expires_at: float | None = None

    @property
    def etag(self) -> str:
        """A strong validator: the key names one immutable upload."""
        return '"' + hashlib.sha256(self.key.encode()).hexdigest()[:32] + '"'

    def meta(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("path")
        return data


def expiry_from_preference(value: str | Mapping[str, Any] | None, now: float | None = None) -> float | None:
    """The expiry time of ``X-Fal-Object-Lifecycle(-Preference)``: ``{"expiration_duration_seconds": N}``.

    None (kept) when absent, unreadable, or N is 0 or less (fal's backends treat 0 as no expiration).
    """
    if value is None:
        return None
    data: Any = value
    if isinstance(value, str):
        try:
            data = json.loads(value)
        except ValueError:
            return None
    if not isinstance(data, Mapping):
        return None
    raw = data.get("expiration_duration_seconds")
    try:
        seconds = float(raw) if raw is not None else 0.0
    except (TypeError, ValueError):
        return None
    if seconds <= 0:
        return None
    return (time.time() if now is None else now) + seconds


def guess_content_type(file_name: str) -> str:
    guessed, _ = mimetypes.guess_type(file_name)
    return guessed or DEFAULT_CONTENT_TYPE


def extension_for(file_name: str, content_type: str) -> str:
    """``.png`` for ``cat.png``; else one from the content type; else ``.bin``."""
    suffix = Path(file_name).suffix if file_name else ""
    if suffix and _EXT.fullmatch(suffix):
        return suffix.lower()
    guessed = mimetypes.guess_extension(content_type.partition(";")[0].strip()) if content_type else None
    if guessed and _EXT.fullmatch(guessed):
        return guessed
    return ".bin"


def valid_key(key: str) -> bool:
    return _KEY.fullmatch(key) is not None


class FileStore:
    """Uploaded files under ``root`` (see the module docstring). Safe to share between threads."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def incoming(self) -> Path:
        return self.root / INCOMING

    # -- keys ----------------------------------------------------------------------------------------
    def new_key(self, file_name: str = "", content_type: str = "") -> str:
        word = WORDS[secrets.randbelow(len(WORDS))]
        return f"{word}/{secrets.token_urlsafe(16)}{extension_for(file_name, content_type)}"

    def _paths(self, key: str) -> tuple[Path, Path]:
        word, _, name = key.partition("/")
        folder = self.root / word
        return folder / name, folder / f".{name}.json"

    # -- reading -------------------------------------------------------------------------------------
    def get(self, key: str) -> StoredFile | None:
        """The file under ``key``; None when there is none (or it expired, which removes it)."""
        if not valid_key(key):
            return None
        path, meta_path = self._paths(key)
        try:
            meta = json.loads(meta_path.read_text())
            size = path.stat().st_size
        except (OSError, ValueError):
            return None
        expires_at = meta.get("expires_at")
        if isinstance(expires_at, int | float) and expires_at <= time.time():
            self.delete(key)
            return None
        return StoredFile(
            key=key,
            path=path,
            content_type=str(meta.get("content_type") or DEFAULT_CONTENT_TYPE),
            file_name=str(meta.get("file_name") or path.name),
            size=size,
            created=float(meta.get("created") or 0.0),
            expires_at=float(expires_at) if isinstance(expires_at, int | float) else None,
        )

    def delete(self, key: str) -> None:
        if not valid_key(key):
            return
        path, meta_path = self._paths(key)
        with contextlib.suppress(OSError):
            path.unlink()
        with contextlib.suppress(OSError):
            meta_path.unlink()

    # -- writing -------------------------------------------------------------------------------------
    def begin(
        self,
        *,
        key: str | None = None,
        file_name: str = "",
        content_type: str = "",
        expires_at: float | None = None,
    ) -> Upload:
        """Start an upload: write its bytes with :meth:`Upload.write`, then :meth:`Upload.commit`."""
        content_type = content_type.strip() or guess_content_type(file_name)
        key = key or self.new_key(file_name, content_type)
        if not valid_key(key):
            raise ValueError(f"not a file key: {key!r}")
        self.incoming.mkdir(parents=True, exist_ok=True)
        return Upload(self, key, file_name or key.rpartition("/")[2], content_type, expires_at)

    def put(self, data: bytes, *, file_name: str = "", content_type: str = "") -> StoredFile:
        """Store ``data`` at once (tests, small files)."""
        upload = self.begin(file_name=file_name, content_type=content_type)
        upload.write(data)
        return upload.commit()

    def _publish(self, temp: Path, stored: StoredFile) -> None:
        path, meta_path = self._paths(stored.key)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta_tmp = temp.with_name(temp.name + ".json")
        meta_tmp.write_text(json.dumps(stored.meta()))
        os.replace(meta_tmp, meta_path)
        os.replace(temp, path)

    # -- housekeeping --------------------------------------------------------------------------------
    def sweep(self, now: float | None = None) -> int:
        """Remove expired files and leftovers of interrupted uploads; returns how many files went."""
        self.clear_incoming()
        return self.sweep_expired(now)

    def clear_incoming(self) -> None:
        """Remove the leftovers of interrupted uploads (only before any upload of this process starts)."""
        shutil.rmtree(self.incoming, ignore_errors=True)

    def sweep_expired(self, now: float | None = None) -> int:
        """Remove expired files (:meth:`get` never serves them either); returns how many went."""
        now = time.time() if now is None else now
        removed = 0
        if not self.root.is_dir():
            return 0
        for meta_path in self.root.glob("*/.*.json"):
            try:
                expires_at = json.loads(meta_path.read_text()).get("expires_at")
            except (OSError, ValueError):
                continue
            if isinstance(expires_at, int | float) and expires_at <= now:
                key = f"{meta_path.parent.name}/{meta_path.name[1:-5]}"
                self.delete(key)
                removed += 1
        return removed


class Upload:
    """One upload in progress: bytes go to a temporary file, published by :meth:`commit`."""

    def __init__(self, store: FileStore, key: str, file_name: str, content_type: str, expires_at: float | None) -> None:
        self.store = store
        self.key = key
        self.file_name = file_name
        self.content_type = content_type
        self.expires_at = expires_at
        self.size = 0
        self.temp = store.incoming / f"{secrets.token_hex(12)}.part"
        self._file: BinaryIO | None = self.temp.open("wb")

    def write(self, data: bytes) -> None:
        if self._file is None:
            raise ValueError("the upload is closed")
        self._file.write(data)
        self.size += len(data)

    def append_files(self, paths: Iterable[Path]) -> None:
        """Append the content of each file in turn (multipart uploads' parts)."""
        if self._file is None:
            raise ValueError("the upload is closed")
        for path in paths:
            with path.open("rb") as source:
                while chunk := source.read(_COPY_CHUNK):
                    self._file.write(chunk)
                    self.size += len(chunk)

    def commit(self) -> StoredFile:
        if self._file is None:
            raise ValueError("the upload is closed")
        self._file.close()
        self._file = None
        stored = StoredFile(
            key=self.key,
            path=self.store._paths(self.key)[0],
            content_type=self.content_type,
            file_name=self.file_name,
            size=self.size,
            created=time.time(),
            expires_at=self.expires_at,
        )
        try:
            self.store._publish(self.temp, stored)
        except BaseException:
            self.abort()
            raise
        return stored

    def abort(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        with contextlib.suppress(OSError):
            self.temp.unlink()
