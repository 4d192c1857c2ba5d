"""Inside a fal.App runner: let fal's download helpers reach the addresses falemu names.

fal's toolkit refuses to download from private, loopback and link-local addresses
(``fal.toolkit.utils.ssrf.is_globally_routable_ip``), and falemu's local CDN lives on one. When
``FALEMU_PUBLIC_ADDRESSES`` holds comma-separated IP addresses (or networks, ``10.0.0.0/8``), those
are treated as globally routable; every other address keeps fal's verdict. Without the variable
nothing changes and nothing is imported.

Loaded at interpreter start by ``falemu_public_addresses.pth`` in the runner's site-packages, so it
also holds for Python processes the app starts. fal is not imported here: the check is wrapped when
fal's ``ssrf`` module is first imported.
"""

from __future__ import annotations

import os
import sys
from typing import Any

TARGET = "fal.toolkit.utils.ssrf"
ENV = "FALEMU_PUBLIC_ADDRESSES"


def allowed_networks(raw: str) -> list[Any]:
    """The networks ``raw`` (comma-separated addresses or networks) names; malformed items are ignored."""
    import ipaddress

    networks: list[Any] = []
    for item in raw.split(","):
        item = item.strip()
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            continue
    return networks


def patch(module: Any, networks: list[Any]) -> None:
    """Wrap ``module.is_globally_routable_ip`` so addresses in ``networks`` count as routable."""
    import ipaddress

    original = getattr(module, "is_globally_routable_ip", None)
    if original is None or getattr(original, "falemu_allowed", None) is not None:
        return

    def is_globally_routable_ip(ip_str: str) -> bool:
        try:
            ip: Any = ipaddress.ip_address(ip_str.split("%", 1)[0])
        except ValueError:
            return bool(original(ip_str))
        candidates = [ip]
        if ip.version == 6 and ip.ipv4_mapped is not None:
            candidates.append(ip.ipv4_mapped)
        if any(c.version == net.version and c in net for c in candidates for net in networks):
            return True
        return bool(original(ip_str))

    is_globally_routable_ip.__doc__ = original.__doc__
    is_globally_routable_ip.falemu_allowed = tuple(str(n) for n in networks)  # type: ignore[attr-defined]
    module.is_globally_routable_ip = is_globally_routable_ip


class _Loader:
    """The module's own loader, which patches the module once it has run."""

    def __init__(self, loader: Any, networks: list[Any]) -> None:
        self._loader = loader
        self._networks = networks

    def create_module(self, spec: Any) -> Any:
        return self._loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        self._loader.exec_module(module)
        patch(module, self._networks)

    def __getattr__(self, name: str) -> Any:  # get_source, get_filename, ... for tracebacks and tools
        return getattr(self._loader, name)


class _Finder:
    def __init__(self, networks: list[Any]) -> None:
        self._networks = networks

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name != TARGET:
            return None
        from importlib.machinery import PathFinder

        spec = PathFinder.find_spec(name, path, target)
        if spec is None or spec.loader is None:
            return spec
        spec.loader = _Loader(spec.loader, self._networks)  # type: ignore[assignment]
        return spec

    def invalidate_caches(self) -> None:
        pass


def install(environ: Any = None) -> bool:
    """Arrange the patch when ``FALEMU_PUBLIC_ADDRESSES`` names addresses; True when it did."""
    raw = (os.environ if environ is None else environ).get(ENV, "")
    networks = allowed_networks(raw) if raw else []
    if not networks:
        return False
    loaded = sys.modules.get(TARGET)
    if loaded is not None:
        patch(loaded, networks)
    elif not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder(networks))
    return True


install()
