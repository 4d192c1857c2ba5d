"""falemu's local CA: made once, private key private, and trusted by an HTTPS client that uses it."""

from __future__ import annotations

import ssl
import stat
from pathlib import Path

import httpx
import pytest

from falemu.gateway.probe import Probe
from falemu.gateway.serve import ThreadedServer
from falemu.gateway.tls import client_bundle, ensure_ca, server_ssl_files


def test_ca_files_are_made_once(tmp_path: Path) -> None:
    certfile, keyfile, ca = server_ssl_files(tmp_path)
    first = Path(certfile).read_bytes()
    assert stat.S_IMODE(Path(keyfile).stat().st_mode) == 0o600
    assert Path(ca).read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")
    assert server_ssl_files(tmp_path) == (certfile, keyfile, ca)
    assert Path(certfile).read_bytes() == first
    bundle = Path(client_bundle(tmp_path)).read_bytes()
    assert bundle.startswith(Path(ca).read_bytes())


def test_https_with_the_local_ca(tmp_path: Path) -> None:
    certfile, keyfile, ca = server_ssl_files(tmp_path)
    with ThreadedServer(Probe("tls"), ssl_certfile=certfile, ssl_keyfile=keyfile) as server:
        assert server.url.startswith("https://127.0.0.1:")
        assert httpx.get(server.url + "/fast", verify=ca).json() == {"ok": True}
        localhost = f"https://localhost:{server.port}/fast"
        assert httpx.get(localhost, verify=client_bundle(tmp_path)).status_code == 200
        with pytest.raises(httpx.ConnectError, match=r"(?i)certificate"):
            httpx.get(server.url + "/fast", verify=ssl.create_default_context())  # the system roots only


def test_ensure_ca_returns_the_four_paths(tmp_path: Path) -> None:
    paths = ensure_ca(tmp_path / "tls")
    assert [p.name for p in paths] == ["server.pem", "server-key.pem", "ca.pem", "bundle.pem"]
    assert all(p.is_file() for p in paths)
