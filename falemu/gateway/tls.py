"""A local certificate authority so fal_client's hard-coded ``https://`` works against falemu.

On first use falemu makes a CA and a server certificate for ``localhost``, ``127.0.0.1`` and ``::1``
with ``trustme`` and keeps them in ``<config_dir>/tls``:

- ``ca.pem``: the CA certificate (what clients trust),
- ``server.pem`` / ``server-key.pem``: the server's certificate chain and key (mode 0600),
- ``bundle.pem``: the CA plus the usual public roots (certifi), for ``SSL_CERT_FILE``, so a shell
  that trusts falemu still reaches every other HTTPS site.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from falemu.errors import FalemuError

SERVER_NAMES = ("localhost", "127.0.0.1", "::1")
_lock = threading.Lock()


def tls_dir() -> Path:
    from falemu.config.settings import config_dir

    return config_dir() / "tls"


def _paths(directory: Path) -> tuple[Path, Path, Path, Path]:
    return (
        directory / "server.pem",
        directory / "server-key.pem",
        directory / "ca.pem",
        directory / "bundle.pem",
    )


def ensure_ca(directory: Path | None = None) -> tuple[Path, Path, Path, Path]:
    """Make the CA and server certificate once; returns (certfile, keyfile, ca_cert, bundle)."""
    directory = directory or tls_dir()
    certfile, keyfile, ca_cert, bundle = _paths(directory)
    with _lock:
        if all(p.is_file() for p in (certfile, keyfile, ca_cert, bundle)):
            return certfile, keyfile, ca_cert, bundle
        try:
            import trustme
        except ImportError:  # pragma: no cover - a dependency of falemu
            raise FalemuError("trustme is not installed", hint="pip install trustme") from None
        try:
            directory.mkdir(parents=True, exist_ok=True)
            os.chmod(directory, 0o700)
            ca = trustme.CA(organization_name="falemu local CA")
            server = ca.issue_cert(*SERVER_NAMES)
            ca.cert_pem.write_to_path(str(ca_cert))
            key_pem = server.private_key_pem.bytes()
            _write(keyfile, key_pem, 0o600)
            _write(certfile, b"".join(blob.bytes() for blob in server.cert_chain_pems), 0o644)
            _write(bundle, ca.cert_pem.bytes() + _public_roots(), 0o644)
        except OSError as exc:
            raise FalemuError(
                f"cannot write falemu's TLS files in {directory}: {exc.strerror or exc}",
                hint="set FALEMU_CONFIG_DIR to a writable folder",
            ) from None
    return certfile, keyfile, ca_cert, bundle


def _public_roots() -> bytes:
    try:
        import certifi

        return b"\n" + Path(certifi.where()).read_bytes()
    except (ImportError, OSError):
        return b""


def _write(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
    finally:
        os.close(fd)


def server_ssl_files(directory: Path | None = None) -> tuple[str, str, str]:
    """(certfile, keyfile, ca_cert_path) for uvicorn's ``ssl_certfile``/``ssl_keyfile``."""
    certfile, keyfile, ca_cert, _ = ensure_ca(directory)
    return str(certfile), str(keyfile), str(ca_cert)


def client_bundle(directory: Path | None = None) -> str:
    """The file for ``SSL_CERT_FILE``: falemu's CA plus the public roots."""
    return str(ensure_ca(directory)[3])
