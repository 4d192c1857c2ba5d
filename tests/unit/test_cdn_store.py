"""The local CDN's pure parts: the file store, lifecycle expiry, Range parsing, local origins."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from falemu.cdn.http import is_local_origin, parse_range
from falemu.cdn.network import bridge_address_of
from falemu.cdn.store import WORDS, FileStore, expiry_from_preference, extension_for, valid_key
from falemu.config.settings import load_settings
from falemu.errors import ConfigError


def test_keys_have_fals_shape_and_cannot_be_guessed(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    keys = {store.new_key("cat.png", "image/png") for _ in range(200)}
    assert len(keys) == 200
    for key in keys:
        word, _, name = key.partition("/")
        assert word in WORDS
        stem, _, ext = name.partition(".")
        assert ext == "png"
        assert len(stem) >= 21
        assert valid_key(key)
    assert store.new_key("", "application/json").endswith(".json")
    assert store.new_key("", "").endswith(".bin")


def test_malformed_keys_are_refused(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    stored = store.put(b"x", file_name="a.txt")
    word = stored.key.partition("/")[0]
    for key in ("../etc/passwd", f"{word}/.{stored.key.partition('/')[2]}.json", "lion/short.png", "Lion/" + "a" * 22):
        assert not valid_key(key)
        assert store.get(key) is None


def test_put_get_keeps_bytes_and_content_type(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "files")
    stored = store.put(b"\x89PNG...", file_name="out.png", content_type="image/png")
    again = FileStore(tmp_path / "files").get(stored.key)  # another store on the folder: the next run
    assert again is not None
    assert again.path.read_bytes() == b"\x89PNG..."
    assert (again.content_type, again.file_name, again.size) == ("image/png", "out.png", 7)
    guessed = store.put(b"{}", file_name="data.json")
    assert guessed.content_type == "application/json"
    assert store.put(b"?", file_name="blob").content_type == "application/octet-stream"
    assert not list((tmp_path / "files" / ".incoming").iterdir())


def test_an_upload_is_invisible_until_committed_and_abort_leaves_nothing(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    upload = store.begin(file_name="a.bin")
    upload.write(b"part")
    assert store.get(upload.key) is None
    upload.abort()
    assert store.get(upload.key) is None
    assert not list(store.incoming.iterdir())


def test_expiry_from_lifecycle_preference() -> None:
    assert expiry_from_preference('{"expiration_duration_seconds": 60}', now=1000.0) == 1060.0
    assert expiry_from_preference({"expiration_duration_seconds": "30"}, now=1000.0) == 1030.0
    for kept in (None, "", "not json", "[]", '{"expiration_duration_seconds": 0}', "{}"):
        assert expiry_from_preference(kept, now=1000.0) is None


def test_expired_files_answer_none_and_are_removed(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    upload = store.begin(file_name="a.txt", expires_at=time.time() - 1)
    upload.write(b"old")
    stored = upload.commit()
    kept = store.put(b"new", file_name="b.txt")
    assert store.get(stored.key) is None
    assert not stored.path.exists()
    assert store.get(kept.key) is not None


def test_sweep_removes_expired_files_and_leftovers(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    stale = store.begin(file_name="a.txt", expires_at=time.time() + 3600)
    stale.write(b"x")
    stored = stale.commit()
    left = store.begin(file_name="half.bin")
    left.write(b"interrupted")
    assert store.sweep(now=time.time() + 7200) == 1
    assert not stored.path.exists()
    assert not store.incoming.exists()


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes=0-0", (0, 0)),
        ("bytes=2-5", (2, 5)),
        ("bytes=2-", (2, 9)),
        ("bytes=-3", (7, 9)),
        ("bytes=-30", (0, 9)),
        ("bytes=5-100", (5, 9)),
        ("bytes=10-", False),
        ("bytes=-0", False),
        ("bytes=5-2", None),
        ("bytes=0-1,4-5", None),
        ("items=0-1", None),
        ("bytes=a-b", None),
    ],
)
def test_parse_range(header: str, expected: object) -> None:
    assert parse_range(header, 10) == expected


def test_local_origins() -> None:
    for origin in ("http://localhost:3000", "https://127.0.0.1", "http://[::1]:5173", "http://localhost"):
        assert is_local_origin(origin)
    for origin in ("https://example.com", "http://localhost.evil.com", "null", None, "http://127.0.0.1.nip.io"):
        assert not is_local_origin(origin)


def test_extension_for() -> None:
    assert extension_for("A.PNG", "") == ".png"
    assert extension_for("x", "image/jpeg") in (".jpg", ".jpeg")
    assert extension_for("weird.name with space", "text/plain") == ".txt"


def test_bridge_address_from_the_engines_network() -> None:
    assert bridge_address_of({"IPAM": {"Config": [{"Subnet": "172.18.0.0/16", "Gateway": "172.18.0.1"}]}}) == (
        "172.18.0.1"
    )
    # Docker 20.10's default bridge names no gateway: the first address of its subnet (no such interface here).
    network = {"IPAM": {"Config": [{"Subnet": "10.9.0.0/16"}]}, "Options": {"com.docker.network.bridge.name": "nx0"}}
    assert bridge_address_of(network) == "10.9.0.1"
    assert bridge_address_of({"IPAM": {"Config": []}}) is None


def test_files_settings(tmp_path: Path) -> None:
    settings = load_settings(environ={"FALEMU_FILES_DIR": str(tmp_path), "FALEMU_FILES_URL": "http://h.local:9/"})
    assert settings.files_dir == tmp_path
    assert settings.files_url == "http://h.local:9"
    assert load_settings(environ={}).files_dir.name == "files"
    with pytest.raises(ConfigError, match="FALEMU_FILES_URL"):
        load_settings(environ={"FALEMU_FILES_URL": "http://h/with/path"})
    with pytest.raises(ConfigError):
        load_settings(environ={"FALEMU_FILES_URL": "ftp://h"})
    assert json.dumps(str(load_settings(environ={}).files_dir))
