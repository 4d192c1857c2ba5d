"""Where runners in containers can reach the host: the address of Docker's default bridge on the host.

A container cannot reach the host's ``127.0.0.1``, where the gateway listens. On Linux the host has an
address on the engine's default bridge (``docker0``, usually ``172.17.0.1``), which is also what
``host.docker.internal`` maps to in runners (``host-gateway``); the host's own processes reach it as
well. With Docker Desktop, Colima or a remote engine that bridge lives in a VM, the address is not
one of this machine's, and :func:`bridge_address` answers None.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import socket
import struct
from collections.abc import Callable
from typing import Any

_SIOCGIFADDR = 0x8915


def interface_address(name: str) -> str | None:
    """The IPv4 address of a network interface of this machine (Linux), None when it has none."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            packed = fcntl.ioctl(sock.fileno(), _SIOCGIFADDR, struct.pack("256s", name[:15].encode()))
        except OSError:
            return None
    return socket.inet_ntoa(packed[20:24])


def is_local_address(address: str) -> bool:
    """True when this machine has ``address`` (a socket can be bound to it)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind((address, 0))
        except OSError:
            return False
    return True


def bridge_address_of(network: dict[str, Any]) -> str | None:
    """The host's address on a bridge network, from the engine's description of it (``docker network inspect``)."""
    ipam = (network.get("IPAM") or {}).get("Config") or []
    for entry in ipam:
        gateway = entry.get("Gateway")
        if gateway and ":" not in gateway:
            return str(gateway).partition("/")[0]
    name = (network.get("Options") or {}).get("com.docker.network.bridge.name")
    if name:
        found = interface_address(name)
        if found:
            return found
    for entry in ipam:  # the engine gives a bridge the first address of its subnet unless told otherwise
        subnet = entry.get("Subnet")
        if subnet and ":" not in subnet:
            with contextlib.suppress(ValueError):
                return str(next(iter(ipaddress.ip_network(subnet, strict=False).hosts())))
    return None


def bridge_address(inspect: Callable[[str], dict[str, Any] | None] | None = None) -> str | None:
    """This machine's address on the engine's default bridge; None when the engine's bridge is elsewhere.

    ``inspect`` answers ``docker network inspect NAME`` (a runtime's ``network``); without it, the
    engine is asked with a Docker SDK client made for the question.
    """
    try:
        if inspect is not None:
            network = inspect("bridge")
        else:
            import docker

            client = docker.from_env(timeout=10)
            try:
                network = client.api.inspect_network("bridge")
            finally:
                with contextlib.suppress(Exception):
                    client.close()
    except Exception:
        return None
    if network is None:
        return None
    address = bridge_address_of(network)
    if address is None or not is_local_address(address):
        return None
    return address
