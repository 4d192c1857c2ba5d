"""fal's CDN (``v3.fal.media``) on falemu's ports: downloads, direct and multipart uploads, upload targets.

Paths (after the mount's prefix, ``/_falemu/cdn`` on the gateway and the file listener, nothing on the
intercepted host ``v3.fal.media``)::

    GET|HEAD /files/{word}/{id}.{ext}                          the file (Range, ETag, content type)
    POST     /files/upload                                     fal_client: raw body, Bearer CDN token
                                                               -> {access_url, content_type, file_name, file_size}
    POST     /files/upload/multipart                           -> {access_url, uploadId}
    PUT      /files/{word}/{id}.{ext}/multipart/{uploadId}/{n} a part (ETag header)
    POST     /files/{word}/{id}.{ext}/multipart/{uploadId}/complete
    PUT      /uploads/{token}                                  the upload_url of /storage/upload/initiate
    PUT      /uploads/{token}/{n}                              a part of initiate-multipart ({partNumber, etag})
    POST     /uploads/{token}/complete                         {"parts": [...]} -> {file_url}

Downloads need no credentials (a file URL is its own secret, as on fal's CDN) and carry
``Access-Control-Allow-Origin: *``; upload targets answer CORS preflights of pages on this machine
(``@fal-ai/client`` in a browser PUTs the bytes itself).
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

from falemu.cdn.http import (
    WRITE_BATCH,
    Disconnected,
    Headers,
    HttpError,
    Receive,
    Request,
    Scope,
    Send,
    cors_headers,
    send_empty,
    send_file,
    send_json,
)
from falemu.cdn.storage import MAX_PARTS, Pending, Storage
from falemu.cdn.store import StoredFile, Upload, expiry_from_preference

NOT_FOUND = "File not found"


def lifecycle_expiry(request: Request) -> float | None:
    value = request.header("x-fal-object-lifecycle") or request.header("x-fal-object-lifecycle-preference")
    return expiry_from_preference(value or None)


class FilesApp:
    """The ASGI app of fal's CDN for one mount ``prefix`` (see the module docstring)."""

    def __init__(self, storage: Storage, prefix: str = "") -> None:
        self.storage = storage
        self.prefix = prefix.rstrip("/")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return  # websockets: nothing here (the server closes the connection)
        request = Request.of(scope, receive, self.prefix)
        segments = [s for s in request.path.split("/") if s]
        download = request.method in ("GET", "HEAD") and len(segments) == 3 and segments[0] == "files"
        cors = cors_headers(request, any_origin=download, expose="ETag, Content-Range, Content-Length")
        try:
            if request.method == "OPTIONS":
                await send_empty(send, 204, cors)
                return
            await self._route(request, segments, send, cors)
        except HttpError as exc:
            await send_json(send, exc.status, {"detail": exc.detail}, cors)
        except Disconnected:
            pass

    async def _route(self, request: Request, segments: list[str], send: Send, cors: Headers) -> None:
        method, storage = request.method, self.storage
        if segments[:1] == ["files"]:
            if len(segments) == 3 and method in ("GET", "HEAD"):
                stored = await asyncio.to_thread(storage.store.get, f"{segments[1]}/{segments[2]}")
                if stored is None:
                    raise HttpError(404, NOT_FOUND)
                await send_file(send, request, stored, cors)
                return
            if segments[1:] == ["upload"] and method == "POST":
                await self._direct_upload(request, send, cors)
                return
            if segments[1:] == ["upload", "multipart"] and method == "POST":
                self._require_token(request)
                token, pending = storage.reserve(
                    request.header("x-fal-file-name"),
                    request.header("content-type"),
                    lifecycle_expiry(request),
                    multipart=True,
                )
                await send_json(send, 200, {"access_url": storage.file_url(pending.key), "uploadId": token}, cors)
                return
            if len(segments) in (6, 7) and segments[3] == "multipart":
                self._require_token(request)
                pending = self._multipart(segments[4], f"{segments[1]}/{segments[2]}")
                await self._multipart_step(request, segments[4], pending, segments[5:], send, cors, "access_url")
                return
        elif segments[:1] == ["uploads"] and len(segments) in (2, 3):
            token = segments[1]
            target = storage.pending(token)
            if target is None:
                raise HttpError(404, "Unknown or finished upload")
            if len(segments) == 2 and method == "PUT" and not target.multipart:
                await self._target_upload(request, token, target, send, cors)
                return
            if len(segments) == 3 and target.multipart:
                await self._multipart_step(request, token, target, segments[2:], send, cors, "file_url")
                return
        raise HttpError(404 if method in ("GET", "HEAD") else 405, "Not found")

    # -- uploads -------------------------------------------------------------------------------------
    def _require_token(self, request: Request) -> None:
        if not self.storage.token_ok(request.header("authorization")):
            raise HttpError(401, "Invalid or expired CDN token")

    def _multipart(self, token: str, key: str) -> Pending:
        pending = self.storage.pending(token)
        if pending is None or not pending.multipart or pending.key != key:
            raise HttpError(404, "Unknown or finished multipart upload")
        return pending

    async def _direct_upload(self, request: Request, send: Send, cors: Headers) -> None:
        self._require_token(request)
        upload = await asyncio.to_thread(
            self.storage.store.begin,
            file_name=request.header("x-fal-file-name"),
            content_type=request.header("content-type"),
            expires_at=lifecycle_expiry(request),
        )
        stored = await _receive_upload(request, upload)
        body = {
            "access_url": self.storage.file_url(stored.key),
            "content_type": stored.content_type,
            "file_name": stored.file_name,
            "file_size": stored.size,
        }
        await send_json(send, 200, body, cors)

    async def _target_upload(self, request: Request, token: str, pending: Pending, send: Send, cors: Headers) -> None:
        self.storage.finish(token)  # single use, like a presigned URL
        upload = await asyncio.to_thread(
            self.storage.store.begin,
            key=pending.key,
            file_name=pending.file_name,
            content_type=pending.content_type,
            expires_at=pending.expires_at,
        )
        stored = await _receive_upload(request, upload)
        await send_json(send, 200, {"file_url": self.storage.file_url(stored.key)}, cors)

    async def _multipart_step(
        self,
        request: Request,
        token: str,
        pending: Pending,
        rest: list[str],
        send: Send,
        cors: Headers,
        url_field: str,
    ) -> None:
        storage = self.storage
        if rest == ["complete"] and request.method == "POST":
            await request.body()  # the parts list: every part received is used, in part-number order
            if not pending.parts:
                raise HttpError(400, "No parts were uploaded")
            if storage.finish(token) is None:
                raise HttpError(404, "Unknown or finished multipart upload")
            stored = await asyncio.to_thread(storage.join_parts, token, pending)
            await send_json(send, 200, {url_field: storage.file_url(stored.key)}, cors)
            return
        if len(rest) != 1 or request.method != "PUT":
            raise HttpError(405, "Not found")
        try:
            number = int(rest[0])
        except ValueError:
            raise HttpError(400, f"Invalid part number {rest[0]!r}") from None
        if not 1 <= number <= MAX_PARTS:
            raise HttpError(400, f"Part number must be between 1 and {MAX_PARTS}")
        path = storage.part_path(token, number)
        etag = await _receive_part(request, path)
        pending.parts[number] = (path, etag)
        headers: Headers = [(b"etag", etag.encode()), *cors]
        await send_json(send, 200, {"partNumber": number, "etag": etag}, headers)


async def _receive_upload(request: Request, upload: Upload) -> StoredFile:
    try:
        await request.stream_to(upload)
        return await asyncio.to_thread(upload.commit)
    except BaseException:
        await asyncio.to_thread(upload.abort)
        raise


async def _receive_part(request: Request, path: Path) -> str:
    """Write a part's body to ``path``; its ETag (the MD5 of its bytes, quoted, as S3 does)."""
    digest = hashlib.md5(usedforsecurity=False)
    fh = await asyncio.to_thread(path.open, "wb")
    try:
        buffer = bytearray()
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                raise Disconnected()
            buffer += message.get("body", b"")
            more = message.get("more_body", False)
            if len(buffer) >= WRITE_BATCH or not more:
                data = bytes(buffer)
                buffer.clear()
                digest.update(data)
                await asyncio.to_thread(fh.write, data)
            if not more:
                break
    finally:
        await asyncio.to_thread(fh.close)
    return f'"{digest.hexdigest()}"'
