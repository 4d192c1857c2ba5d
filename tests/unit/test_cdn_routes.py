"""The local CDN's HTTP routes on a real gateway: downloads, storage API, upload targets, CORS, the socket."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cdn_support import CdnStack


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[CdnStack]:
    with CdnStack(tmp_path) as s:
        yield s


def _initiate(stack: CdnStack, path: str = "initiate", **body: str) -> dict[str, str]:
    response = httpx.post(
        f"{stack.base}/_falemu/rest/storage/upload/{path}?storage_type=fal-cdn-v3",
        json=body or {"file_name": "cat.png", "content_type": "image/png"},
        headers=stack.auth,
    )
    assert response.status_code == 200, response.text
    data: dict[str, str] = response.json()
    return data


def test_download_serves_bytes_content_type_ranges_and_validators(stack: CdnStack) -> None:
    data = bytes(range(256)) * 40
    stored = stack.cdn.storage.store.put(data, file_name="out.png", content_type="image/png")
    url = stack.cdn.storage.file_url(stored.key)
    assert url.startswith(stack.base + "/_falemu/cdn/files/")  # process runtime: the gateway's own address
    whole = httpx.get(url)
    assert whole.status_code == 200
    assert whole.content == data
    assert whole.headers["content-type"] == "image/png"
    assert whole.headers["accept-ranges"] == "bytes"
    part = httpx.get(url, headers={"Range": "bytes=100-199"})
    assert part.status_code == 206
    assert part.content == data[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(data)}"
    tail = httpx.get(url, headers={"Range": "bytes=-10"})
    assert tail.status_code == 206
    assert tail.content == data[-10:]
    beyond = httpx.get(url, headers={"Range": f"bytes={len(data)}-"})
    assert beyond.status_code == 416
    assert beyond.headers["content-range"] == f"bytes */{len(data)}"
    multi = httpx.get(url, headers={"Range": "bytes=0-1,5-6"})
    assert multi.status_code == 200
    assert multi.content == data
    head = httpx.head(url)
    assert head.status_code == 200
    assert head.headers["content-length"] == str(len(data))
    assert head.content == b""
    cached = httpx.get(url, headers={"If-None-Match": whole.headers["etag"]})
    assert cached.status_code == 304
    assert cached.content == b""
    stale_range = httpx.get(url, headers={"Range": "bytes=0-0", "If-Range": '"other"'})
    assert stale_range.status_code == 200
    assert stale_range.content == data


def test_unknown_and_malformed_file_ids_are_404(stack: CdnStack) -> None:
    stored = stack.cdn.storage.store.put(b"x", file_name="a.txt")
    word = stored.key.partition("/")[0]
    for path in (
        f"files/{word}/AAAAAAAAAAAAAAAAAAAAAA.txt",
        "files/lion/x.txt",
        "files/lion",
        f"files/{word}/.{stored.key.partition('/')[2]}.json",
        "files/%2e%2e/%2e%2e",
    ):
        response = httpx.get(f"{stack.base}/_falemu/cdn/{path}")
        assert response.status_code == 404, path
        assert response.json() == {"detail": "File not found"} or path == "files/lion"


def test_storage_api_needs_a_key(stack: CdnStack) -> None:
    url = f"{stack.base}/_falemu/rest/storage/upload/initiate?storage_type=fal-cdn-v3"
    missing = httpx.post(url, json={})
    assert missing.status_code == 401
    assert "FAL_KEY" in missing.json()["detail"]
    wrong = httpx.post(url, json={}, headers={"Authorization": "Key abc:def"})
    assert wrong.status_code == 401
    assert wrong.json() == {"detail": "No user found for Key ID and Secret"}
    upload = httpx.post(f"{stack.base}/_falemu/cdn/files/upload", content=b"x", headers={"Authorization": "Bearer x"})
    assert upload.status_code == 401
    assert httpx.get(f"{stack.base}/_falemu/rest/storage/upload/initiate").status_code == 405
    assert httpx.post(f"{stack.base}/_falemu/rest/nothing", headers=stack.auth).status_code == 404


def test_realtime_token_route_answers_a_token_for_the_callers_key(stack: CdnStack) -> None:
    """``POST /tokens/`` as fal_client and @fal-ai/client call it before a realtime connection."""
    url = f"{stack.base}/_falemu/rest/tokens/"
    body = {"allowed_apps": ["live"], "token_expiration": 120}
    answer = httpx.post(url, json=body, headers=stack.auth)
    assert answer.status_code == 200, answer.text
    token = answer.json()
    assert isinstance(token, str)  # fal answers the token alone, a JSON string
    caller = stack.keys.token_caller(token, "live")
    assert caller is not None
    assert caller.user == "local"
    assert stack.keys.token_caller(token, "other") is None
    assert httpx.post(url, json=body).status_code == 401
    assert httpx.post(url, json=body, headers={"Authorization": "Key abc:def"}).status_code == 401
    for bad in ({}, {"allowed_apps": []}, {"allowed_apps": ["live"], "token_expiration": -1}, ["live"]):
        refused = httpx.post(url, json=bad, headers=stack.auth)
        assert refused.status_code == 422, bad
        assert refused.json()["detail"]


def test_initiate_then_put_stores_once(stack: CdnStack) -> None:
    target = _initiate(stack)
    assert target["upload_url"].startswith(stack.cdn.files_base + "/_falemu/cdn/uploads/")
    assert httpx.get(target["file_url"]).status_code == 404  # nothing before the PUT
    put = httpx.put(target["upload_url"], content=b"\x89PNG", headers={"Content-Type": "image/png"})
    assert put.status_code == 200
    got = httpx.get(target["file_url"])
    assert got.content == b"\x89PNG"
    assert got.headers["content-type"] == "image/png"
    again = httpx.put(target["upload_url"], content=b"other")
    assert again.status_code == 404  # single use, like a presigned URL
    assert httpx.get(target["file_url"]).content == b"\x89PNG"


def test_initiate_multipart_joins_parts_in_order(stack: CdnStack) -> None:
    target = _initiate(stack, "initiate-multipart", file_name="big.bin", content_type="application/x-thing")
    parts = {2: b"B" * 1000, 1: b"A" * 3000, 3: b"C"}
    etags = []
    for number, body in parts.items():  # out of order, as concurrent uploads arrive
        response = httpx.put(f"{target['upload_url']}/{number}", content=body)
        assert response.status_code == 200
        assert response.json() == {"partNumber": number, "etag": response.headers["etag"]}
        etags.append({"partNumber": number, "etag": response.headers["etag"]})
    assert httpx.put(f"{target['upload_url']}/0", content=b"x").status_code == 400
    done = httpx.post(f"{target['upload_url']}/complete", json={"parts": etags})
    assert done.status_code == 200
    assert done.json() == {"file_url": target["file_url"]}
    got = httpx.get(target["file_url"])
    assert got.content == parts[1] + parts[2] + parts[3]
    assert got.headers["content-type"] == "application/x-thing"
    assert httpx.post(f"{target['upload_url']}/complete", json={"parts": etags}).status_code == 404


def test_cors_for_pages_on_this_machine(stack: CdnStack) -> None:
    target = _initiate(stack)
    preflight = httpx.options(
        target["upload_url"],
        headers={
            "Origin": "http://localhost:3000",
            "Access-Control-Request-Method": "PUT",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == "http://localhost:3000"
    assert "PUT" in preflight.headers["access-control-allow-methods"]
    assert preflight.headers["access-control-allow-headers"] == "content-type"
    foreign = httpx.options(
        target["upload_url"], headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "PUT"}
    )
    assert "access-control-allow-origin" not in foreign.headers
    rest = httpx.options(
        f"{stack.base}/_falemu/rest/storage/upload/initiate",
        headers={"Origin": "http://127.0.0.1:5173", "Access-Control-Request-Method": "POST"},
    )
    assert rest.headers["access-control-allow-origin"] == "http://127.0.0.1:5173"
    httpx.put(target["upload_url"], content=b"img", headers={"Origin": "http://localhost:3000"})
    download = httpx.get(target["file_url"], headers={"Origin": "https://anywhere.example"})
    assert download.headers["access-control-allow-origin"] == "*"


def test_uploader_socket_speaks_fals_local_protocol(stack: CdnStack) -> None:
    assert stack.cdn.runner_env()["FAL_API_SOCKET"] == str(stack.cdn.socket_path)
    assert stack.cdn.runner_mounts() == {}  # the process runtime: runners reach the socket at its own path
    transport = httpx.HTTPTransport(uds=str(stack.cdn.socket_path))
    with httpx.Client(transport=transport, base_url="http://localhost") as sock:
        accepted = sock.post(
            "/v1/uploads", content=b"hello", headers={"X-Fal-File-Name": "hi.txt", "Content-Type": "text/plain"}
        )
        assert accepted.status_code == 202
        body = accepted.json()
        assert body["state"] == "accepted_local"
        state = sock.get(f"/v1/uploads/{body['upload_id']}", params={"wait": 60})
        assert state.status_code == 200
        assert state.json()["state"] == "completed"
        assert sock.get("/v1/uploads/nope").status_code == 404
        policy = sock.post("/v1/uploads", content=b"x", headers={"x-app-fal-upload-policy": "{}"})
        assert 400 <= policy.status_code < 500
        assert policy.status_code not in (413, 422, 429)
        opened = sock.post("/v1/upload-sessions", headers={"X-Fal-File-Name": "s.json"})
        assert opened.status_code == 201
        assert opened.json()["state"] == "receiving"
        session = opened.json()["upload_id"]
        assert httpx.get(opened.json()["file_url"]).status_code == 404  # reserved, not there yet
        assert sock.put(f"/v1/upload-sessions/{session}/body", content=b'{"a": 1}').status_code == 204
        wrong = sock.post(f"/v1/upload-sessions/{session}/finish", json={"size_bytes": 3})
        assert wrong.status_code == 409
        finished = sock.post(f"/v1/upload-sessions/{session}/finish", json={"size_bytes": 8})
        assert finished.status_code == 202
        assert finished.json()["file_url"] == opened.json()["file_url"]
        dropped = sock.post("/v1/upload-sessions", headers={"X-Fal-File-Name": "d.bin"}).json()
        assert sock.delete(f"/v1/upload-sessions/{dropped['upload_id']}").status_code == 202
        assert sock.put(f"/v1/upload-sessions/{dropped['upload_id']}/body", content=b"x").status_code == 404
    got = httpx.get(body["file_url"])
    assert got.content == b"hello"
    assert got.headers["content-type"] == "text/plain"
    json_file = httpx.get(finished.json()["file_url"])
    assert json_file.json() == {"a": 1}
    assert json_file.headers["content-type"] == "application/json"


def test_lifecycle_preference_expires_the_file(stack: CdnStack) -> None:
    transport = httpx.HTTPTransport(uds=str(stack.cdn.socket_path))
    with httpx.Client(transport=transport, base_url="http://localhost") as sock:
        body = sock.post(
            "/v1/uploads",
            content=b"short-lived",
            headers={"X-Fal-File-Name": "t.txt", "X-Fal-Object-Lifecycle": '{"expiration_duration_seconds": 3600}'},
        ).json()
    key = body["file_url"].split("/files/", 1)[1]
    stored = stack.cdn.storage.store.get(key)
    assert stored is not None
    assert stored.expires_at is not None
    assert stored.expires_at > stored.created + 3000


def test_socket_folder_is_removed_on_close(tmp_path: Path) -> None:
    stack = CdnStack(tmp_path)
    folder = stack.cdn.socket_dir
    assert folder is not None
    assert (folder / "api.sock").exists()
    stack.close()
    assert not folder.exists()


def test_docker_runtime_serves_files_on_the_bridge_address_and_mounts_the_socket(tmp_path: Path) -> None:
    # 127.0.0.1 stands in for the engine's bridge address; the gateway has its port there, so another is taken.
    with CdnStack(tmp_path, runtime="docker", bridge="127.0.0.1") as stack:
        files = stack.cdn.files_base
        assert files.startswith("http://127.0.0.1:")
        assert files != stack.base
        assert stack.cdn.runner_mounts() == {str(stack.cdn.socket_dir): "/run/fal"}
        env = stack.cdn.runner_env()
        assert env["FAL_API_SOCKET"] == "/run/fal/api.sock"
        assert env["FAL_USE_LOCAL_UPLOADER"] == "1"
        assert env["FALEMU_PUBLIC_ADDRESSES"] == "127.0.0.1"
        stored = stack.cdn.storage.store.put(b"on the bridge", file_name="b.txt")
        url = stack.cdn.storage.file_url(stored.key)
        assert url.startswith(files + "/_falemu/cdn/files/")
        assert httpx.get(url).content == b"on the bridge"
        assert httpx.get(url.replace(files, stack.base)).content == b"on the bridge"  # the gateway serves it too
        other = httpx.get(f"{files}/local/greeter")
        assert other.status_code == 404  # the file listener serves the CDN's routes only
        assert stack.notices == []


def test_without_a_bridge_on_this_machine_a_notice_names_files_url(tmp_path: Path) -> None:
    with CdnStack(tmp_path, runtime="docker", bridge=None) as stack:
        assert stack.cdn.files_base == stack.base
        assert len(stack.notices) == 1
        assert "files_url" in stack.notices[0]


def test_files_url_setting_wins(tmp_path: Path) -> None:
    with CdnStack(tmp_path, runtime="docker", files_url="http://127.0.0.2:9999") as stack:
        assert stack.cdn.files_base == "http://127.0.0.2:9999"
        assert stack.cdn.runner_env()["FALEMU_PUBLIC_ADDRESSES"] == "127.0.0.2"
        assert stack.notices == []


def test_socket_folders_of_killed_processes_are_removed(tmp_path: Path) -> None:
    import os
    import socket as sockets

    from falemu.cdn.service import remove_stale_socket_dirs

    live = CdnStack(tmp_path / "live")
    try:
        dead = tmp_path / "tmp" / "falemu-api-dead"
        dead.mkdir(parents=True)
        with sockets.socket(sockets.AF_UNIX, sockets.SOCK_STREAM) as gone:  # bound, then its process "died"
            gone.bind(str(dead / "api.sock"))
        young = tmp_path / "tmp" / "falemu-api-young"
        young.mkdir()
        stack_dir = live.cdn.socket_dir
        assert stack_dir is not None
        linked = tmp_path / "tmp" / "falemu-api-live"
        linked.mkdir()
        os.symlink(stack_dir / "api.sock", linked / "api.sock")  # a folder whose socket still answers
        old = 1_000_000_000
        for folder in (dead, linked):
            os.utime(folder, (old, old))
        assert remove_stale_socket_dirs(tmp_path / "tmp") == 1
        assert not dead.exists()
        assert young.exists()  # too new: its process may be about to bind
        assert linked.exists()
        assert stack_dir.exists()
    finally:
        live.close()


def test_starting_clears_interrupted_uploads_at_once_and_expired_files_once_it_serves(tmp_path: Path) -> None:
    from falemu.cdn.store import FileStore
    from falemu.config.model import AppConfig, AppShape, Project
    from falemu.config.settings import Settings
    from falemu.emulator import Emulator
    from falemu.runtime.fake import FakeRuntime
    from falemu.testing import wait_until

    store = FileStore(tmp_path / "files")
    expired = store.begin(file_name="old.txt", expires_at=time.time() + 0.2)
    expired.write(b"old")
    old = expired.commit()
    kept = store.put(b"kept", file_name="kept.txt")
    half = store.begin(file_name="half.bin")
    half.write(b"interrupted")
    time.sleep(0.3)  # now expired
    with CdnStack(tmp_path) as stack:
        assert not store.incoming.exists()  # before any upload of this run can start
        assert old.path.exists()  # never served, removed later
        assert stack.cdn.storage.store.get(old.key) is None
    greeter = AppConfig(name="greeter", alias="greeter", shape=AppShape.DIRECT_SERVER, project_root=tmp_path)
    project = Project(root=tmp_path, pyproject=tmp_path / "pyproject.toml", apps={"greeter": greeter})
    settings = Settings(port=0, files_dir=tmp_path / "files", data_dir=tmp_path / "data")
    expired = store.begin(file_name="old2.txt", expires_at=time.time() + 0.2)
    expired.write(b"old")
    old = expired.commit()
    time.sleep(0.3)
    with Emulator(project, settings, runtime=FakeRuntime()) as emu:
        wait_until(lambda: not old.path.exists(), timeout=20, what="the expired file's removal")
        assert emu.cdn is not None
        assert emu.cdn.storage.store.get(kept.key) is not None
