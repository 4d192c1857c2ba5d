"""The storage and realtime-token routes of fal's REST API (``rest.fal.ai``) on falemu's ports.

Paths (after the mount's prefix, ``/_falemu/rest`` on the gateway, nothing on the intercepted hosts
``rest.fal.ai`` and ``rest.alpha.fal.ai``); every one needs a falemu API key (``Authorization: Key
id:secret``, any local user's)::

    POST /storage/auth/token?storage_type=fal-cdn-v3       -> {token, token_type, base_url, expires_at}
    POST /storage/upload/initiate?storage_type=...         {file_name, content_type} -> {upload_url, file_url}
    POST /storage/upload/initiate-multipart?storage_type=... the same, for an upload sent in parts
    POST /tokens/                                          {allowed_apps, token_expiration} -> "<token>"

``/tokens/`` gives the short-lived token fal_client's ``realtime()`` / ``ws_connect()`` and
``@fal-ai/client``'s realtime connect with (``?fal_jwt_token=``); see falemu.gateway.realtime_tokens.

``base_url`` is where fal_client sends multipart uploads: ``https://v3.fal.media`` when the request came
for ``rest.fal.ai`` (the caller goes through falemu's proxy), else falemu's own CDN prefix on the same
address. ``upload_url`` and ``file_url`` are on falemu's file address, which runners can reach too.
"""

from __future__ import annotations

from falemu.cdn.files_api import lifecycle_expiry
from falemu.cdn.http import Disconnected, HttpError, Receive, Request, Scope, Send, cors_headers, send_empty, send_json
from falemu.cdn.storage import CDN_PREFIX, Storage
from falemu.gateway.realtime_tokens import TokenRequestError, parse_request

PUBLIC_CDN = "https://v3.fal.media"
MISSING_KEY = "Missing authorization header. Set FAL_KEY (`falemu env` prints one)."
NO_KEY = "No user found for Key ID and Secret"


class RestApp:
    """The ASGI app of fal's REST storage routes for one mount ``prefix`` (see the module docstring)."""

    def __init__(self, storage: Storage, prefix: str = "") -> None:
        self.storage = storage
        self.prefix = prefix.rstrip("/")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        request = Request.of(scope, receive, self.prefix)
        cors = cors_headers(request, expose="X-Fal-Request-Id")
        try:
            if request.method == "OPTIONS":
                await send_empty(send, 204, cors)
                return
            body = await self._route(request)
            await send_json(send, 200, body, cors)
        except HttpError as exc:
            await send_json(send, exc.status, {"detail": exc.detail}, cors)
        except Disconnected:
            pass

    async def _route(self, request: Request) -> dict[str, str] | str:
        path = request.path.rstrip("/")
        routes = ("/storage/auth/token", "/storage/upload/initiate", "/storage/upload/initiate-multipart", "/tokens")
        if path not in routes:
            raise HttpError(404, "Not Found")
        if request.method != "POST":
            raise HttpError(405, "Method Not Allowed")
        authorization = request.header("authorization")
        if not authorization:
            raise HttpError(401, MISSING_KEY)
        if not self.storage.key_ok(authorization):
            raise HttpError(401, NO_KEY)
        storage = self.storage
        if path == "/tokens":
            return await self._realtime_token(request, authorization)
        if path == "/storage/auth/token":
            await request.body()
            token, expires = storage.new_token()
            base = PUBLIC_CDN if not self.prefix else request.base_url() + CDN_PREFIX
            return {"token": token, "token_type": "Bearer", "base_url": base, "expires_at": expires.isoformat()}
        data = await request.json()
        if not isinstance(data, dict):
            raise HttpError(422, "The request body must be a JSON object")
        file_name = str(data.get("file_name") or "")
        content_type = str(data.get("content_type") or "")
        multipart = path.endswith("-multipart")
        token, pending = storage.reserve(file_name, content_type, lifecycle_expiry(request), multipart=multipart)
        return {"upload_url": storage.upload_url(token), "file_url": storage.file_url(pending.key)}

    async def _realtime_token(self, request: Request, authorization: str) -> str:
        """fal's answer is the token alone, as a JSON string."""
        keys = self.storage.keys
        caller = keys.authenticate(authorization) if keys is not None else None
        if keys is None or caller is None:
            raise HttpError(401, NO_KEY)
        try:
            apps, seconds = parse_request(await request.json())
        except TokenRequestError as exc:
            raise HttpError(422, str(exc)) from None
        return keys.issue_token(caller, apps, seconds)
