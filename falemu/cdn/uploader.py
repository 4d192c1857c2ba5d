"""fal's node-local uploader, served on a unix socket that every runner gets.

The fal SDK inside a runner uploads ``File``/``Image`` outputs through it when
``FAL_USE_LOCAL_UPLOADER=1`` and ``FAL_API_SOCKET`` names the socket (the protocol of
``fal/toolkit/file/_local_uploader.py``, fal 1.83)::

    POST   /v1/uploads                       raw body; X-Fal-File-Name, Content-Type
                                             -> 202 {"state": "accepted_local", "upload_id", "file_url"}
    POST   /v1/upload-sessions               -> 201 {"state": "receiving", "upload_id", "file_url"}
    PUT    /v1/upload-sessions/{id}/body     the bytes (any length) -> 204
    POST   /v1/upload-sessions/{id}/finish   {"size_bytes": N} -> 202 accepted_local (409 when N differs)
    DELETE /v1/upload-sessions/{id}          -> 202 (the reservation is dropped)
    GET    /v1/uploads/{id}?wait=S           -> 200 {"state": "completed"}; 404 unknown id

falemu stores the bytes before it answers, so an accepted upload is already complete and its URL
downloadable. An upload under a caller's upload policy (``x-app-fal-upload-policy``) is refused with
400, so the SDK sends it to the caller's bucket itself, as it does on a node without the uploader.
A lifecycle header (``X-Fal-Object-Lifecycle``) sets the file's expiry, as on the CDN.
"""

from __future__ import annotations

import asyncio
import secrets
from collections import OrderedDict
from dataclasses import dataclass
from urllib.parse import unquote

from falemu.cdn.files_api import lifecycle_expiry
from falemu.cdn.http import Disconnected, HttpError, Receive, Request, Scope, Send, send_empty, send_json
from falemu.cdn.storage import Storage
from falemu.cdn.store import Upload, guess_content_type

UPLOAD_POLICY_HEADER = "x-app-fal-upload-policy"
_KEEP_IDS = 10_000  # completed upload ids remembered for GET /v1/uploads/{id}


@dataclass
class _Session:
    key: str
    file_name: str
    content_type: str
    expires_at: float | None
    upload: Upload | None = None
    size: int = 0


class UploaderApp:
    """The ASGI app of the runner-side uploader socket (see the module docstring)."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self._sessions: dict[str, _Session] = {}
        self._done: OrderedDict[str, str] = OrderedDict()  # upload id -> key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        request = Request.of(scope, receive)
        try:
            await self._route(request, send)
        except HttpError as exc:
            await send_json(send, exc.status, {"detail": exc.detail})
        except Disconnected:
            pass

    async def _route(self, request: Request, send: Send) -> None:
        segments = [unquote(s) for s in request.path.split("/") if s]
        method = request.method
        if segments == ["v1", "uploads"] and method == "POST":
            await self._upload(request, send)
        elif len(segments) == 3 and segments[:2] == ["v1", "uploads"] and method == "GET":
            if segments[2] not in self._done:
                raise HttpError(404, "Unknown upload")
            await send_json(send, 200, {"state": "completed", "upload_id": segments[2]})
        elif segments == ["v1", "upload-sessions"] and method == "POST":
            await self._open(request, send)
        elif len(segments) >= 3 and segments[:2] == ["v1", "upload-sessions"]:
            await self._session_step(request, segments[2], segments[3:], send)
        else:
            raise HttpError(404, "Not Found")

    def _file_name(self, request: Request) -> str:
        return request.header("x-fal-file-name").strip()

    def _remember(self, key: str) -> str:
        upload_id = secrets.token_hex(16)
        self._done[upload_id] = key
        while len(self._done) > _KEEP_IDS:
            self._done.popitem(last=False)
        return upload_id

    async def _upload(self, request: Request, send: Send) -> None:
        if request.header(UPLOAD_POLICY_HEADER):
            raise HttpError(400, "Uploads under an upload policy are not taken here")
        upload = await asyncio.to_thread(
            self.storage.store.begin,
            file_name=self._file_name(request),
            content_type=request.header("content-type"),
            expires_at=lifecycle_expiry(request),
        )
        try:
            await request.stream_to(upload)
            stored = await asyncio.to_thread(upload.commit)
        except BaseException:
            await asyncio.to_thread(upload.abort)
            raise
        await send_json(send, 202, self._accepted(stored.key))

    def _accepted(self, key: str) -> dict[str, str]:
        return {"state": "accepted_local", "upload_id": self._remember(key), "file_url": self._url(key)}

    def _url(self, key: str) -> str:
        return self.storage.file_url(key)

    async def _open(self, request: Request, send: Send) -> None:
        if request.header(UPLOAD_POLICY_HEADER):
            raise HttpError(400, "Uploads under an upload policy are not taken here")
        await request.body()
        file_name = self._file_name(request)
        content_type = request.header("content-type").strip() or guess_content_type(file_name)
        key = self.storage.store.new_key(file_name, content_type)
        session_id = secrets.token_hex(16)
        self._sessions[session_id] = _Session(key, file_name, content_type, lifecycle_expiry(request))
        body = {"state": "receiving", "upload_id": session_id, "file_url": self._url(key)}
        await send_json(send, 201, body)

    async def _session_step(self, request: Request, session_id: str, rest: list[str], send: Send) -> None:
        session = self._sessions.get(session_id)
        if session is None:
            raise HttpError(404, "Unknown upload session")
        method = request.method
        if not rest and method == "DELETE":
            self._sessions.pop(session_id, None)
            if session.upload is not None:
                await asyncio.to_thread(session.upload.abort)
            await send_empty(send, 202)
        elif rest == ["body"] and method == "PUT":
            if session.upload is not None:
                raise HttpError(409, "The body of this session was sent already")
            session.upload = await asyncio.to_thread(
                self.storage.store.begin,
                key=session.key,
                file_name=session.file_name,
                content_type=session.content_type,
                expires_at=session.expires_at,
            )
            session.size = await request.stream_to(session.upload)
            await send_empty(send, 204)
        elif rest == ["finish"] and method == "POST":
            data = await request.json()
            expected = data.get("size_bytes") if isinstance(data, dict) else None
            if session.upload is None:
                raise HttpError(409, "No body was sent for this session")
            if expected is not None and expected != session.size:
                raise HttpError(409, f"size_bytes {expected} differs from the {session.size} bytes received")
            self._sessions.pop(session_id, None)
            stored = await asyncio.to_thread(session.upload.commit)
            body = {
                "state": "accepted_local",
                "upload_id": self._remember(stored.key),
                "file_url": self._url(stored.key),
            }
            await send_json(send, 202, body)
        else:
            raise HttpError(405, "Method Not Allowed")
