"""What the CDN's routes share: the file store, the URLs files get, CDN tokens and uploads in progress.

Three kinds of upload reach the store (see ``falemu/cdn/__init__.py`` for who uses which):

- *direct*: a body POSTed with a CDN token (fal_client's ``POST {CDN}/files/upload``) or handed to the
  runner-side uploader socket; stored at once;
- *initiated*: ``POST {REST}/storage/upload/initiate`` reserves a key and answers an ``upload_url``
  (an unguessable, single-use target, like a presigned URL) that takes the bytes in one ``PUT``;
  ``initiate-multipart`` answers one that takes parts (``PUT <upload_url>/<n>``) and a
  ``POST <upload_url>/complete``;
- *multipart with a token*: fal_client's ``POST {CDN}/files/upload/multipart`` (over 100 MB), then
  ``PUT <access_url>/multipart/<uploadId>/<n>`` and ``POST .../complete``.

Parts are kept as separate files until the upload completes, then joined into one; nothing is held in
memory. Tokens and unfinished uploads live as long as the falemu process; files outlive it.
"""

from __future__ import annotations

import contextlib
import hashlib
import secrets
import shutil
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from falemu.cdn.store import FileStore, StoredFile, guess_content_type

if TYPE_CHECKING:
    from falemu.gateway.keys import KeyStore

CDN_PREFIX = "/_falemu/cdn"  # fal's CDN (v3.fal.media) on falemu's ports: files, uploads
REST_PREFIX = "/_falemu/rest"  # fal's REST API (rest.fal.ai), its storage routes
TOKEN_SECONDS = 3600.0
MAX_PARTS = 10_000
_UNFINISHED_SECONDS = 24 * 3600.0  # an upload target or multipart upload not completed by then is dropped


@dataclass
class Pending:
    """An upload whose key is reserved and whose bytes are still to come."""

    key: str
    file_name: str
    content_type: str
    expires_at: float | None
    multipart: bool
    created: float = field(default_factory=time.monotonic)
    parts: dict[int, tuple[Path, str]] = field(default_factory=dict)  # number -> (file, etag)


class Storage:
    """The store plus the state of uploads in progress; ``files_base`` is set once falemu listens."""

    def __init__(self, store: FileStore, keys: KeyStore | None = None, files_base: str = "") -> None:
        self.store = store
        self.keys = keys
        self.files_base = files_base.rstrip("/")
        self._tokens: dict[str, float] = {}  # CDN token -> expiry (time.time())
        self._pending: dict[str, Pending] = {}  # upload token or multipart upload id -> the upload

    # -- URLs ----------------------------------------------------------------------------------------
    def file_url(self, key: str) -> str:
        """Where a file is downloaded: on falemu's file address, reachable from the host and from runners."""
        return f"{self.files_base}{CDN_PREFIX}/files/{key}"

    def upload_url(self, token: str) -> str:
        return f"{self.files_base}{CDN_PREFIX}/uploads/{token}"

    # -- auth ----------------------------------------------------------------------------------------
    def key_ok(self, authorization: str) -> bool:
        """A falemu API key (``Key id:secret``), of any local user."""
        return self.keys is not None and self.keys.authenticate(authorization) is not None

    def new_token(self) -> tuple[str, datetime]:
        token = secrets.token_urlsafe(32)
        expires = time.time() + TOKEN_SECONDS
        self._tokens[token] = expires
        now = time.time()
        for old, when in list(self._tokens.items()):
            if when <= now:
                self._tokens.pop(old, None)
        return token, datetime.fromtimestamp(expires, UTC)

    def token_ok(self, authorization: str) -> bool:
        """A CDN token this process issued (``Bearer <token>``), or a falemu API key."""
        scheme, _, credential = authorization.strip().partition(" ")
        if scheme.lower() == "bearer":
            expires = self._tokens.get(credential.strip())
            if expires is not None and expires > time.time():
                return True
        return self.key_ok(authorization)

    # -- uploads in progress -------------------------------------------------------------------------
    def reserve(
        self, file_name: str, content_type: str, expires_at: float | None, *, multipart: bool
    ) -> tuple[str, Pending]:
        """A reserved key and the id (token) its bytes are sent under."""
        self._drop_stale()
        content_type = content_type.strip() or guess_content_type(file_name)
        key = self.store.new_key(file_name, content_type)
        token = secrets.token_urlsafe(24)
        pending = Pending(key, file_name, content_type, expires_at, multipart)
        self._pending[token] = pending
        return token, pending

    def pending(self, token: str) -> Pending | None:
        return self._pending.get(token)

    def finish(self, token: str) -> Pending | None:
        return self._pending.pop(token, None)

    def part_path(self, token: str, number: int) -> Path:
        folder = self.store.incoming / f"parts-{hashlib.sha256(token.encode()).hexdigest()[:24]}"
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"{number:05d}"

    def join_parts(self, token: str, pending: Pending) -> StoredFile:
        """Join the parts (in part-number order) into the file; blocking (run it in a thread)."""
        upload = self.store.begin(
            key=pending.key,
            file_name=pending.file_name,
            content_type=pending.content_type,
            expires_at=pending.expires_at,
        )
        try:
            upload.append_files(path for _, (path, _) in sorted(pending.parts.items()))
            stored = upload.commit()
        except BaseException:
            upload.abort()
            raise
        self.discard_parts(token, pending)
        return stored

    def discard_parts(self, token: str, pending: Pending) -> None:
        folders = {path.parent for path, _ in pending.parts.values()}
        for folder in folders:
            shutil.rmtree(folder, ignore_errors=True)
        pending.parts.clear()

    def _drop_stale(self) -> None:
        limit = time.monotonic() - _UNFINISHED_SECONDS
        for token, pending in list(self._pending.items()):
            if pending.created < limit:
                self._pending.pop(token, None)
                with contextlib.suppress(OSError):
                    self.discard_parts(token, pending)
