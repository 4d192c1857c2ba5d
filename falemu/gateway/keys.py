"""Local API keys: ``FAL_KEY = "<key_id>:<key_secret>"`` as fal issues them.

Keys live in ``<config_dir>/keys.json`` (mode 0600). The file holds each key's id, user, label and
the SHA-256 of its secret, never the secret itself: a secret is shown once, when it is created. The
one exception is the *default* key, made on first use so ``falemu env`` and the pytest plugin have a
key to hand out: its full value is also kept in ``<config_dir>/default-key`` (mode 0600), and
revoking it removes that file.

Every key belongs to a user. Keys made without naming one (the default key, ``falemu keys create``)
belong to the *local user*, the person running falemu, whatever owner the gateway serves: like a fal
user calling their own team's apps, the local user may call every app of every owner falemu serves,
private ones included. A key made for another user (``falemu keys create --user alice``) is that
user's: private apps refuse it unless ``alice`` is the owner.

Secrets are compared with :func:`hmac.compare_digest`; an unknown id costs the same comparison as a
known one. Nothing here logs or emits a key.

A gateway checks keys on every request, so the store does not touch the file system per request: it
looks at the key file again at most every :data:`RELOAD_INTERVAL` seconds, and at once when told to
(:meth:`KeyStore.reload`, which ``falemu keys create/revoke`` trigger in every running ``falemu up``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from falemu.errors import FalemuError, UsageError
from falemu.gateway.realtime_tokens import TokenSigner

KEYS_FILE = "keys.json"
DEFAULT_KEY_FILE = "default-key"
LOCAL_USER = "local"  # the user of keys made without naming one: the person running falemu
RELOAD_INTERVAL = 1.0  # seconds between looks at the key file (reload() looks at once)
_DUMMY_HASH = hashlib.sha256(b"falemu-no-such-key").hexdigest()


@dataclass(frozen=True)
class ApiKey:
    """A stored key, without its secret."""

    id: str
    user: str
    label: str
    created: float
    secret_sha256: str
    default: bool = False


@dataclass(frozen=True)
class Caller:
    """Who a request comes from, once its key checked out."""

    user: str
    key_id: str
    local: bool = False  # the local user's key: may call every app falemu serves

    def may_call_private(self, owner: str) -> bool:
        """Whether this caller may call a private app of ``owner``."""
        return self.local or self.user == owner


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _scheme(value: str) -> tuple[str, str]:
    """An Authorization value's scheme (lower case) and credentials; any whitespace separates them."""
    parts = value.split(None, 1)
    if not parts:
        return "", ""
    return parts[0].lower(), parts[1].strip() if len(parts) > 1 else ""


def parse_authorization(value: str | None) -> tuple[str, str] | None:
    """``Key <id>:<secret>`` or ``Bearer <id>:<secret>`` -> (id, secret); None for anything else.

    The scheme is case-insensitive and separated from the credentials by any whitespace (a tab too).
    """
    if not value:
        return None
    scheme, credential = _scheme(value)
    if scheme not in ("key", "bearer"):
        return None
    key_id, sep, secret = credential.partition(":")
    if not sep or not key_id or not secret:
        return None
    return key_id, secret


def looks_like_key(value: str) -> bool:
    """Whether an Authorization value is meant as a fal key, well-formed or not: the ``Key`` scheme, or
    ``Bearer <id>:<secret>``. Such a value is the platform's: never an app's own credentials."""
    scheme, _ = _scheme(value)
    return scheme == "key" or parse_authorization(value) is not None


class KeyStore:
    """The key file, re-read when it changes on disk (``falemu keys revoke`` takes effect at once)."""

    def __init__(self, directory: Path | None = None, *, user: str = LOCAL_USER) -> None:
        if directory is None:
            from falemu.config.settings import config_dir

            directory = config_dir()
        self.directory = directory
        self.path = directory / KEYS_FILE
        self.default_path = directory / DEFAULT_KEY_FILE
        self.user = user
        self._lock = threading.Lock()
        self._keys: dict[str, ApiKey] = {}
        self._stamp: tuple[int, int, int] | None = None
        self._checked = -RELOAD_INTERVAL  # monotonic time of the last look at the file
        self._tokens = TokenSigner()

    # -- reading -------------------------------------------------------------------------------
    def reload(self) -> None:
        """Look at the key file on the next check (a revoked key is refused from then on)."""
        with self._lock:
            self._checked = -RELOAD_INTERVAL

    def _current(self) -> dict[str, ApiKey]:
        """The keys, looking at the file only when RELOAD_INTERVAL has passed since the last look."""
        now = time.monotonic()
        if now - self._checked < RELOAD_INTERVAL:
            return self._keys
        keys = self._load()
        self._checked = now
        return keys

    def _load(self) -> dict[str, ApiKey]:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            self._keys, self._stamp = {}, None
            return self._keys
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return self._keys
        try:
            data = json.loads(self.path.read_text())
            keys = {item["id"]: ApiKey(**item) for item in data.get("keys", [])}
        except (ValueError, TypeError, KeyError) as exc:
            raise FalemuError(
                f"{self.path} is not a falemu key file ({type(exc).__name__})",
                hint=f"remove {self.path} and run `falemu keys create`",
            ) from None
        self._keys, self._stamp = keys, stamp
        return keys

    def list(self) -> list[ApiKey]:
        with self._lock:
            return sorted(self._load().values(), key=lambda k: k.created)

    def verify(self, key_id: str, secret: str) -> Caller | None:
        """The caller a key belongs to, or None when the id is unknown or the secret is wrong."""
        with self._lock:
            key = self._current().get(key_id)
        expected = key.secret_sha256 if key is not None else _DUMMY_HASH
        ok = hmac.compare_digest(_hash(secret), expected)
        if key is None or not ok:
            return None
        return Caller(user=key.user, key_id=key.id, local=key.default or key.user == LOCAL_USER)

    def authenticate(self, authorization: str | None) -> Caller | None:
        parsed = parse_authorization(authorization)
        if parsed is None:
            return None
        return self.verify(*parsed)

    # -- realtime tokens (falemu.gateway.realtime_tokens) ----------------------------------------
    def issue_token(self, caller: Caller, apps: Sequence[str], seconds: float) -> str:
        """A token standing for ``caller``'s key on websockets of ``apps``, for ``seconds``."""
        return self._tokens.issue(
            user=caller.user, key_id=caller.key_id, local=caller.local, apps=[*apps], seconds=seconds
        )

    def token_caller(self, token: str, alias: str) -> Caller | None:
        """The caller of a token issued here that allows ``alias``, while it lasts and its key is not revoked."""
        claims = self._tokens.check(token, alias)
        if claims is None:
            return None
        with self._lock:
            if claims.key_id not in self._current():
                return None
        return Caller(user=claims.user, key_id=claims.key_id, local=claims.local)

    # -- writing -------------------------------------------------------------------------------
    def _write(self, keys: dict[str, ApiKey]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        payload = json.dumps({"version": 1, "keys": [asdict(k) for k in keys.values()]}, indent=2)
        _write_private(self.path, payload)
        self._stamp = None
        self._checked = -RELOAD_INTERVAL

    def create(self, label: str = "", *, user: str | None = None, default: bool = False) -> tuple[ApiKey, str]:
        """Make a key; returns it with its full ``id:secret`` value, which is not stored anywhere else."""
        key_id = str(uuid.uuid4())
        secret = secrets.token_hex(32)
        key = ApiKey(
            id=key_id,
            user=user or self.user,
            label=label,
            created=time.time(),
            secret_sha256=_hash(secret),
            default=default,
        )
        with self._lock:
            keys = dict(self._load())
            keys[key_id] = key
            self._write(keys)
            if default:
                _write_private(self.default_path, f"{key_id}:{secret}\n")
        return key, f"{key_id}:{secret}"

    def revoke(self, key_id: str) -> ApiKey:
        with self._lock:
            keys = dict(self._load())
            matches = [k for k in keys if k == key_id or k.startswith(key_id)] if key_id else []
            if len(matches) != 1:
                raise UsageError(
                    f"no key with id {key_id!r}" if not matches else f"key id prefix {key_id!r} is ambiguous",
                    hint="`falemu keys list` shows the key ids",
                )
            key = keys.pop(matches[0])
            self._write(keys)
            if key.default:
                self.default_path.unlink(missing_ok=True)
        return key

    def default_key(self) -> str:
        """The default key's ``id:secret``, made on first use."""
        with self._lock:
            keys = self._load()
            try:
                value = self.default_path.read_text().strip()
            except FileNotFoundError:
                value = ""
            key_id = value.partition(":")[0]
            if value and key_id in keys:
                return value
        _, value = self.create("default", default=True)
        return value


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically with mode 0600 from the first byte."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
