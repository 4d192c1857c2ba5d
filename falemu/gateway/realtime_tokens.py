"""Short-lived realtime tokens, as fal's ``POST https://rest.fal.ai/tokens/`` issues them.

fal_client's ``realtime()`` and ``ws_connect()`` (and ``@fal-ai/client``'s ``realtime.connect``) first
trade the caller's key for a token, ``{"allowed_apps": ["<alias>"], "token_expiration": 120}`` ->
``"<jwt>"``, then open ``wss://<host>/<owner>/<alias>/<path>?fal_jwt_token=<jwt>`` with no
Authorization header. A token here is an HS256 JWT signed with a secret of this process: it names the
key's user and key id, the apps it allows and when it expires. It is checked when the websocket
opens: a good signature, not expired, the app among its allowed apps, and the key it came from still
in the key file (revoking the key ends its tokens too).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

DEFAULT_SECONDS = 120  # fal_client's and @fal-ai/client's REALTIME_TOKEN_EXPIRATION_SECONDS
MAX_SECONDS = 24 * 3600


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


_HEADER = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())


class TokenRequestError(ValueError):
    """A token request whose body fal would refuse (the message says why)."""


@dataclass(frozen=True)
class TokenClaims:
    """What a valid token says: whose key it came from, and the apps it opens."""

    user: str
    key_id: str
    local: bool
    apps: tuple[str, ...]
    expires: float


def parse_request(body: Any) -> tuple[list[str], float]:
    """The apps and lifetime (seconds) of a ``POST /tokens/`` body; raises TokenRequestError."""
    if not isinstance(body, dict):
        raise TokenRequestError("The request body must be a JSON object")
    apps = body.get("allowed_apps")
    if not isinstance(apps, list) or not apps or not all(isinstance(a, str) and a for a in apps):
        raise TokenRequestError("allowed_apps must be a non-empty list of app names")
    seconds = body.get("token_expiration", DEFAULT_SECONDS)
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not 0 < seconds <= MAX_SECONDS:
        raise TokenRequestError(f"token_expiration must be a number of seconds from 1 to {MAX_SECONDS}")
    return apps, float(seconds)


class TokenSigner:
    """Issues and checks tokens with a secret made when the process starts (tokens end with it)."""

    def __init__(self, secret: bytes | None = None) -> None:
        self._secret = secret or secrets.token_bytes(32)

    def _sign(self, signing_input: str) -> str:
        return _b64(hmac.new(self._secret, signing_input.encode("ascii"), hashlib.sha256).digest())

    def issue(self, *, user: str, key_id: str, local: bool, apps: list[str], seconds: float) -> str:
        now = time.time()
        claims = {
            "sub": user,
            "kid": key_id,
            "local": local,
            "allowed_apps": apps,
            "iat": int(now),
            "exp": now + seconds,
            "jti": secrets.token_urlsafe(8),
        }
        signing_input = f"{_HEADER}.{_b64(json.dumps(claims, separators=(',', ':')).encode())}"
        return f"{signing_input}.{self._sign(signing_input)}"

    def check(self, token: str, alias: str) -> TokenClaims | None:
        """The token's claims when it is signed here, not expired and allows ``alias``; else None."""
        header, _, rest = token.partition(".")
        payload, _, signature = rest.partition(".")
        if header != _HEADER or not payload or not signature:
            return None
        if not hmac.compare_digest(self._sign(f"{header}.{payload}"), signature):
            return None
        try:
            claims = json.loads(_unb64(payload))
            apps = tuple(claims["allowed_apps"])
            expires = float(claims["exp"])
            result = TokenClaims(str(claims["sub"]), str(claims["kid"]), bool(claims["local"]), apps, expires)
        except (ValueError, TypeError, KeyError):
            return None
        if expires <= time.time() or alias not in result.apps:
            return None
        return result
