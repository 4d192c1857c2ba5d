"""Waiting for a runner to become ready, as a timeline.

A runner is ready when its exposed port answers HTTP: ``health_check.path`` with a 2xx status when the
app has one (a fal.App's ``GET /health``, which answers once ``setup()`` has returned, unless it declares
a health check endpoint), otherwise any HTTP answer. The wait polls tightly (every 20 ms by default) and checks
the runner's own state between attempts, so a runner that dies during start-up fails at once with
its exit code instead of waiting out ``startup_timeout``. A ``diagnose`` callback can explain why the
port stays silent (the server bound to 127.0.0.1 inside the container) and end the wait early.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

from falemu.errors import RunnerError, StartupTimeout


@dataclass(frozen=True)
class Exited:
    """The runner is gone: its exit code and when that was noticed."""

    code: int | None
    detail: str = ""


class NotReady(Exception):
    """Why a wait ended without readiness: ``reason`` is ``exited``, ``timeout`` or ``diagnosed``."""

    def __init__(self, reason: str, message: str, exited: Exited | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.exited = exited


def http_status(host: str, port: int, path: str, timeout: float, method: str = "GET") -> int | None:
    """The status code of ``<method> path`` (no body), or None when nothing answered HTTP."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            hostport = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            body = "Content-Length: 0\r\n" if method not in ("GET", "HEAD") else ""
            request = (
                f"{method} {path} HTTP/1.1\r\nHost: {hostport}\r\nUser-Agent: falemu-readiness\r\n"
                f"{body}Connection: close\r\n\r\n"
            )
            sock.sendall(request.encode())
            data = b""
            while b"\r\n" not in data and len(data) < 1024:
                chunk = sock.recv(1024)
                if not chunk:
                    break
                data += chunk
    except OSError:
        return None
    parts = data.split(b"\r\n", 1)[0].split()
    if len(parts) >= 2 and parts[0].startswith(b"HTTP/") and parts[1].isdigit():
        return int(parts[1])
    return None


@dataclass
class ReadinessProbe:
    host: str
    port: int
    health_path: str | None = None
    poll_interval: float = 0.02
    health_method: str = "GET"
    state_interval: float = 0.1  # how often ``exited`` is asked
    diagnose_after: float = 0.5  # start diagnosing once the port stayed silent this long
    diagnose_interval: float = 1.0
    attempt_timeout: float = 2.0

    def wait(
        self,
        timeout: float,
        exited: Callable[[], Exited | None],
        diagnose: Callable[[], str | None] | None = None,
        since: float | None = None,
    ) -> dict[str, float]:
        """Block until ready; return the phases ``port_open`` and ``http_ready`` in seconds.

        ``port_open`` counts from ``since`` (a ``time.monotonic()`` value: when the runner was started)
        when given, else from now. Raises :class:`NotReady` when the runner exits, ``timeout`` passes
        or ``diagnose`` finds the cause.
        """
        now = time.monotonic()
        started = now if since is None else min(since, now)
        deadline = now + timeout
        next_state = started
        silent_since = started
        next_diagnose = started + self.diagnose_after
        port_open: float | None = None
        path = self.health_path or "/"
        while True:
            now = time.monotonic()
            if now >= next_state:
                gone = exited()
                if gone is not None:
                    raise NotReady("exited", "the runner exited during start-up", gone)
                next_state = now + self.state_interval
            attempt = max(0.05, min(self.attempt_timeout, deadline - now))
            status = http_status(self.host, self.port, path, attempt, self.health_method)
            now = time.monotonic()
            if status is not None:
                if port_open is None:
                    port_open = now - started
                if self.health_path is None or 200 <= status < 300:
                    return {"port_open": port_open, "http_ready": now - started - port_open}
            elif (
                port_open is None
                and diagnose is not None
                and now >= next_diagnose
                and now - silent_since >= self.diagnose_after
            ):
                found = diagnose()
                if found:
                    raise NotReady("diagnosed", found)
                next_diagnose = time.monotonic() + self.diagnose_interval
            if now >= deadline:
                gone = exited()
                if gone is not None:
                    raise NotReady("exited", "the runner exited during start-up", gone)
                raise NotReady("timeout", f"not ready after {timeout:g} s")
            time.sleep(max(0.0, min(self.poll_interval, deadline - time.monotonic())))


def listening_sockets(proc_net_tcp: str) -> list[tuple[str, int]]:
    """``(address, port)`` of LISTEN sockets in the text of ``/proc/net/tcp`` and ``/proc/net/tcp6``."""
    found: list[tuple[str, int]] = []
    for line in proc_net_tcp.splitlines():
        fields = line.split()
        if len(fields) < 4 or fields[3] != "0A" or ":" not in fields[1]:
            continue
        addr_hex, _, port_hex = fields[1].rpartition(":")
        try:
            port = int(port_hex, 16)
            found.append((_decode_addr(addr_hex), port))
        except ValueError:
            continue
    return found


def _decode_addr(addr_hex: str) -> str:
    raw = bytes.fromhex(addr_hex)
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw[::-1])
    # IPv6 in /proc is four little-endian 32-bit words.
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
    return socket.inet_ntop(socket.AF_INET6, words)


LOOPBACK = ("127.", "::1", "::ffff:127.")


def loopback_message(sockets: list[tuple[str, int]], port: int) -> str | None:
    """The 127.0.0.1 mistake: the exposed port is only listened on at a loopback address."""
    on_port = [addr for addr, p in sockets if p == port]
    if not on_port or not all(addr.startswith(LOOPBACK) for addr in on_port):
        return None
    return f"the server listens on {on_port[0]}:{port} inside the container; fal needs 0.0.0.0"


def ipv6_only_message(sockets: list[tuple[str, int]], port: int, host: str | None, timeout: float = 0.25) -> str | None:
    """The IPv6-only mistake: the exposed port is listened on at IPv6 addresses only (``[::]`` with
    ``IPV6_V6ONLY``, as some servers bind by default) and an IPv4 connection to it is refused.

    ``/proc`` does not show ``IPV6_V6ONLY``; a dual-stack ``[::]`` accepts IPv4, so only the refusal of
    ``host:port`` (the container's own IPv4 address, not a published port's proxy) tells the two apart.
    """
    on_port = [addr for addr, p in sockets if p == port]
    if host is None:
        return None
    if not on_port or not all(":" in addr and not addr.startswith(("::ffff:", "::1")) for addr in on_port):
        return None
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except ConnectionRefusedError:
        return (
            f"the server listens on [{on_port[0]}]:{port} inside the container, IPv6 only; runners are "
            "reached over IPv4: fal needs 0.0.0.0"
        )
    except OSError:
        return None
    return None


def wrong_port_message(sockets: list[tuple[str, int]], port: int) -> str | None:
    """A hint when the server listens, but on other ports than ``exposed_port``."""
    others = sorted({p for _, p in sockets if p != port})
    if not others or any(p == port for _, p in sockets):
        return None
    listed = ", ".join(str(p) for p in others)
    return f"the server listens on port {listed} inside the container, but exposed_port is {port}"


def startup_error(
    failure: NotReady,
    *,
    runner: str,
    app: str,
    logs: str,
    limit: float,
    port: int,
    health_path: str | None,
    timeout_hint: str | None = None,
    health_method: str = "GET",
    cause: str | None = None,
) -> RunnerError:
    """The error a runner start raises for ``failure``, with the runner's last ``logs``."""
    last = logs.strip().splitlines()[-1] if logs.strip() else "(no output)"
    if failure.reason == "exited":
        gone = failure.exited or Exited(None)
        code = "" if gone.code is None else f" with code {gone.code}"
        extra = f" ({gone.detail})" if gone.detail else ""
        return RunnerError(
            f"runner {runner} of {app} exited{code} during start-up{extra}",
            hint=f"its last log line: {last}",
            error_type="runner_scheduling_failure",
            logs=logs,
            exit_code=gone.code,
        )
    if failure.reason == "diagnosed":
        # fal would wait out startup_timeout for this runner; the cause is certain, so say it now.
        return RunnerError(
            failure.message,
            hint="bind the server to 0.0.0.0 (for example uvicorn --host 0.0.0.0)",
            error_type="startup_timeout",
            logs=logs,
        )
    wanted = f"{health_method} {health_path or '/'} on port {port} never answered" + (" 2xx" if health_path else "")
    if cause:  # what was seen instead (a server on another port): callers and tests see only the message
        wanted += f"; {cause}"
        timeout_hint = timeout_hint or f"make exposed_port and the port the server listens on the same ({port} now)"
    return StartupTimeout(
        f"runner {runner} of {app} was not ready within startup_timeout ({limit:g} s): {wanted}",
        hint=timeout_hint
        or (
            f"its last log line: {last}; if the server is only slow to start, raise startup_timeout"
            if logs.strip()
            else f"the server printed nothing: check that it starts and listens on 0.0.0.0:{port}, "
            "or raise startup_timeout if it is only slow"
        ),
        logs=logs,
    )
