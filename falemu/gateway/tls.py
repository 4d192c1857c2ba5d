"""A local certificate authority so fal_client's hard-coded ``https://`` works against falemu.

On first use falemu makes a CA and a server certificate with ``trustme`` and keeps them in
``<config_dir>/tls``:

- ``ca.pem``: the CA certificate (what clients trust), ``ca-key.pem``: its key (mode 0600), kept to
  issue a certificate for a host the gateway intercepts on an HTTPS proxy tunnel;
- ``server.pem`` / ``server-key.pem``: the server's certificate chain and key (mode 0600), valid for
  :data:`SERVER_NAMES`: the gateway's own addresses and the fal hosts fal_client calls directly;
- ``bundle.pem``: the CA plus the usual public roots (certifi), for ``SSL_CERT_FILE``, so a shell
  that trusts falemu still reaches every other HTTPS site.

A folder made by an older falemu (no CA key, or a server certificate for fewer names) is made anew
on first use; ``bundle.pem`` keeps its path, so shells that point ``SSL_CERT_FILE`` at it keep working.
Files are written to a temporary name and renamed, under a lock file, so two processes starting at
once agree on one CA.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from falemu.errors import FalemuError

if TYPE_CHECKING:
    import ssl

# The gateway's own names, then the fal hosts that fal_client reaches without FAL_RUN_HOST (uploads).
SERVER_NAMES = (
    "localhost",
    "*.localhost",
    "127.0.0.1",
    "::1",
    "rest.fal.ai",
    "v3.fal.media",
    "v3b.fal.media",
    "fal.media",
    "fal.run",
    "queue.fal.run",
)
_NAMES_FILE = "server-names.txt"
_lock = threading.Lock()
_contexts: dict[tuple[Path, str | None], ssl.SSLContext] = {}


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


def _current(directory: Path) -> bool:
    files = (*_paths(directory), directory / "ca-key.pem", directory / _NAMES_FILE)
    if not all(p.is_file() for p in files):
        return False
    return (directory / _NAMES_FILE).read_text().split() == list(SERVER_NAMES)


def ensure_ca(directory: Path | None = None) -> tuple[Path, Path, Path, Path]:
    """Make the CA and server certificate once; returns (certfile, keyfile, ca_cert, bundle)."""
    directory = directory or tls_dir()
    certfile, keyfile, ca_cert, bundle = _paths(directory)
    with _lock:
        if _current(directory):
            return certfile, keyfile, ca_cert, bundle
        try:
            import trustme
        except ImportError:  # pragma: no cover - a dependency of falemu
            raise FalemuError("trustme is not installed", hint="pip install trustme") from None
        try:
            directory.mkdir(parents=True, exist_ok=True)
            os.chmod(directory, 0o700)
            with _file_lock(directory):
                if _current(directory):  # another process made them meanwhile
                    return certfile, keyfile, ca_cert, bundle
                ca = trustme.CA(organization_name="falemu local CA")
                server = ca.issue_cert(*SERVER_NAMES)
                _write(directory / "ca-key.pem", ca.private_key_pem.bytes(), 0o600)
                _write(ca_cert, ca.cert_pem.bytes(), 0o644)
                _write(keyfile, server.private_key_pem.bytes(), 0o600)
                _write(certfile, b"".join(blob.bytes() for blob in server.cert_chain_pems), 0o644)
                _write(bundle, ca.cert_pem.bytes() + _public_roots(), 0o644)
                _write(directory / _NAMES_FILE, "\n".join(SERVER_NAMES).encode() + b"\n", 0o644)
                _contexts.clear()
        except OSError as exc:
            raise FalemuError(
                f"cannot write falemu's TLS files in {directory}: {exc.strerror or exc}",
                hint="set FALEMU_CONFIG_DIR to a writable folder",
            ) from None
    return certfile, keyfile, ca_cert, bundle


@contextlib.contextmanager
def _file_lock(directory: Path) -> Iterator[None]:
    import fcntl

    fd = os.open(str(directory / ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _public_roots() -> bytes:
    try:
        import certifi

        return b"\n" + Path(certifi.where()).read_bytes()
    except (ImportError, OSError):
        return b""


def _write(path: Path, data: bytes, mode: int) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(str(temporary), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(temporary, path)


def server_ssl_files(directory: Path | None = None) -> tuple[str, str, str]:
    """(certfile, keyfile, ca_cert_path) for uvicorn's ``ssl_certfile``/``ssl_keyfile``."""
    certfile, keyfile, ca_cert, _ = ensure_ca(directory)
    return str(certfile), str(keyfile), str(ca_cert)


def client_bundle(directory: Path | None = None) -> str:
    """The file for ``SSL_CERT_FILE``: falemu's CA plus the public roots."""
    return str(ensure_ca(directory)[3])


def covered(host: str) -> bool:
    """Whether the server certificate is valid for ``host``."""
    host = host.lower()
    if host in SERVER_NAMES:
        return True
    parent = host.partition(".")[2]
    return bool(parent) and f"*.{parent}" in SERVER_NAMES


def server_context(host: str | None = None, directory: Path | None = None) -> ssl.SSLContext:
    """A server-side TLS context with a certificate from falemu's CA for ``host`` (default: the
    server certificate, for :data:`SERVER_NAMES`). Made once per host; HTTP/1.1 only."""
    import ssl

    directory = directory or tls_dir()
    name = None if host is None or covered(host) else host.lower()
    context = _contexts.get((directory, name))
    if context is not None:
        return context
    certfile, keyfile, ca_cert, _ = ensure_ca(directory)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.set_alpn_protocols(["http/1.1"])
    if name is None:
        context.load_cert_chain(str(certfile), str(keyfile))
    else:
        import tempfile

        import trustme

        ca = trustme.CA.from_pem(ca_cert.read_bytes(), (directory / "ca-key.pem").read_bytes())
        leaf = ca.issue_cert(name)
        # ssl loads a chain only from files: write it to a private temporary file and drop it at once.
        with tempfile.TemporaryDirectory(prefix="falemu-tls-") as scratch:
            chain = Path(scratch) / "leaf.pem"
            leaf.private_key_and_cert_chain_pem.write_to_path(str(chain))
            context.load_cert_chain(str(chain))
    _contexts[(directory, name)] = context
    return context
