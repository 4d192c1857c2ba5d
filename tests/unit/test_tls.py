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


def test_a_folder_from_an_older_falemu_is_made_anew_and_covers_the_fal_hosts(tmp_path: Path) -> None:
    import trustme

    directory = tmp_path / "tls"
    directory.mkdir()
    old_ca = trustme.CA()
    old_server = old_ca.issue_cert("localhost", "127.0.0.1", "::1")  # what falemu made before: no CA key kept
    old_ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    old_server.private_key_pem.write_to_path(str(directory / "server-key.pem"))
    (directory / "server.pem").write_bytes(b"".join(blob.bytes() for blob in old_server.cert_chain_pems))
    (directory / "bundle.pem").write_bytes(old_ca.cert_pem.bytes())
    certfile, keyfile, ca, bundle = ensure_ca(directory)
    assert bundle == directory / "bundle.pem"  # same path: shells pointing SSL_CERT_FILE at it keep working
    assert ca.read_bytes() != old_ca.cert_pem.bytes()
    assert stat.S_IMODE((directory / "ca-key.pem").stat().st_mode) == 0o600
    context = ssl.create_default_context(cafile=str(bundle))
    with ThreadedServer(Probe("tls"), ssl_certfile=str(certfile), ssl_keyfile=str(keyfile)) as server:
        url = f"https://127.0.0.1:{server.port}/fast"
        for host in ("rest.fal.ai", "v3.fal.media", "localhost"):
            # To loopback, with the certificate checked against the fal host's name (a new connection each).
            with httpx.Client(verify=context) as client:
                assert client.get(url, extensions={"sni_hostname": host}).status_code == 200
        with httpx.Client(verify=context) as client, pytest.raises(httpx.ConnectError, match=r"(?i)certificate"):
            client.get(url, extensions={"sni_hostname": "example.org"})
    assert ensure_ca(directory) == (certfile, keyfile, ca, bundle)  # made once
