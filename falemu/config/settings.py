"""falemu's own settings, separate from fal's app config.

Precedence, lowest to highest: defaults, ``[tool.falemu]`` in the pyproject, ``FALEMU_*`` environment
variables, command-line flags. Resolved once into a frozen :class:`Settings` that records where each
value came from.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal, get_args

from falemu.errors import ConfigError

RuntimeName = Literal["auto", "docker", "process"]
GpuMode = Literal["auto", "require", "off"]
SettingSource = Literal["default", "pyproject", "env", "cli"]


def cache_dir() -> Path:
    """falemu's cache folder (``$XDG_CACHE_HOME/falemu``): the default data folder and the queue stores."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "falemu"


def config_dir() -> Path:
    """Where falemu keeps keys and its local CA (``$XDG_CONFIG_HOME/falemu``)."""
    override = os.environ.get("FALEMU_CONFIG_DIR")
    if override:
        return Path(override)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "falemu"


@dataclass(frozen=True)
class Settings:
    owner: str = "local"
    host: str = "127.0.0.1"
    port: int = 8787
    data_dir: Path = field(default_factory=lambda: cache_dir() / "data")
    runtime: RuntimeName = "auto"
    gpu: GpuMode = "auto"
    machine_limits: bool = False
    tls: bool = False  # accepted and ignored: the gateway serves HTTP and HTTPS on one port
    keep_failed: bool = False
    files_dir: Path = field(default_factory=lambda: cache_dir() / "files")
    files_url: str = ""
    dashboard: bool = True  # the dashboard at the gateway's root, its API and /metrics; request history
    prices: Path | None = None  # a JSON price table merged over falemu's (the dashboard's cost figures)
    max_body_mb: int = 100  # the largest sync request body the gateway takes (413 beyond it)
    body_timeout: float = 60.0  # seconds a request body may pause between two of its parts (then 408)
    python_image: str = ""  # base of fal.Apps with only requirements; "" means python:<this Python's X.Y>-slim
    sources: Mapping[str, SettingSource] = field(default_factory=dict, compare=False)

    def with_overrides(self, values: Mapping[str, Any], source: SettingSource) -> Settings:
        """Return a copy with ``values`` (already in this class's vocabulary) applied from ``source``."""
        known = {f.name: f for f in fields(self) if f.name != "sources"}
        changes: dict[str, Any] = {}
        sources = dict(self.sources)
        for key, raw in values.items():
            if raw is None:
                continue
            name = key.replace("-", "_")
            if name not in known:
                from falemu.config._hints import _suggest

                close = _suggest(name, known)
                where = " in [tool.falemu]" if source == "pyproject" else ""
                raise ConfigError(
                    f"Unknown falemu setting {key!r}{where}",
                    hint=(f"did you mean `{close}`? " if close else "") + "known settings: " + ", ".join(sorted(known)),
                )
            changes[name] = _coerce(name, raw, source)
            sources[name] = source
        return replace(self, **changes, sources=sources)


_BOOL = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}


def _coerce(name: str, raw: Any, source: SettingSource) -> Any:
    # what the message names: "[tool.falemu] port", "FALEMU_PORT" or "--port" (never "--port port")
    where = {
        "pyproject": f"[tool.falemu] {name}",
        "env": f"FALEMU_{name.upper()}",
        "cli": f"--{name.replace('_', '-')}",
    }.get(source, name)
    if name in ("machine_limits", "tls", "keep_failed", "dashboard"):
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.lower() in _BOOL:
            return _BOOL[raw.lower()]
        raise ConfigError(f"{where} must be a boolean, got {raw!r}", hint="use true or false")
    if name == "port":
        try:
            port = int(raw)
        except (TypeError, ValueError):
            raise ConfigError(f"{where} must be an integer, got {raw!r}", hint="for example 8787") from None
        if not 0 <= port <= 65535:
            raise ConfigError(f"{where} must be between 0 and 65535, got {port}", hint="for example 8787")
        return port
    if name == "max_body_mb":
        return _number(where, raw, int, "for example 100")
    if name == "body_timeout":
        return _number(where, raw, float, "for example 60")
    if name in ("data_dir", "files_dir", "prices"):
        return Path(str(raw)).expanduser()
    if name == "files_url":
        return _files_url(where, raw)
    if name == "runtime":
        return _choice(where, raw, get_args(RuntimeName))
    if name == "gpu":
        return _choice(where, raw, get_args(GpuMode))
    if name == "owner":
        return _owner(where, raw)
    return str(raw)


_OWNER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def _owner(where: str, raw: Any) -> str:
    """The owner part of every app URL (``/{owner}/{app}``): one path segment, not one the gateway uses."""
    owner = str(raw)
    if not _OWNER.fullmatch(owner):
        raise ConfigError(
            f"{where} must be one URL path segment (letters, digits, '-', '_', '.'), got {raw!r}",
            hint="for example local or your fal user name",
        )
    reserved = {
        "queue": "the gateway's queue API (/queue/{owner}/{app})",
        "api": "the JS client proxy (/api/fal/proxy)",
        "metrics": "the gateway's Prometheus metrics (/metrics)",
    }
    if owner.lower() in reserved:
        raise ConfigError(
            f"{where} {owner!r} clashes with {reserved[owner.lower()]}",
            hint="pick another owner, for example local",
        )
    return owner


def _files_url(where: str, raw: Any) -> str:
    """Where file URLs of the local CDN point (``http://host:port``); empty for falemu's own choice."""
    url = str(raw).strip().rstrip("/")
    if not url:
        return ""
    if not re.fullmatch(r"https?://[^/?#\s]+", url):
        raise ConfigError(
            f"{where} must be a scheme, host and port without a path, got {raw!r}",
            hint="for example http://host.docker.internal:8787",
        )
    return url


def _number(where: str, raw: Any, kind: type[int] | type[float], example: str) -> Any:
    """A positive, finite int or float setting (a bool is not a number here)."""
    try:
        if isinstance(raw, bool):
            raise ValueError
        value = kind(raw)
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(f"{where} must be a number, got {raw!r}", hint=example) from None
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{where} must be a positive number, got {raw!r}", hint=example)
    return value


def _choice(where: str, raw: Any, allowed: tuple[str, ...]) -> str:
    value = str(raw).lower()
    if value not in allowed:
        raise ConfigError(f"{where} must be one of {', '.join(allowed)}, got {raw!r}", hint=f"use {allowed[0]}")
    return value


ENV_KEYS = (
    "owner",
    "host",
    "port",
    "data_dir",
    "runtime",
    "gpu",
    "machine_limits",
    "tls",
    "keep_failed",
    "files_dir",
    "files_url",
    "dashboard",
    "prices",
    "max_body_mb",
    "body_timeout",
    "python_image",
)


def load_settings(
    pyproject_table: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    cli: Mapping[str, Any] | None = None,
) -> Settings:
    """Resolve falemu's settings: defaults < ``[tool.falemu]`` < ``FALEMU_*`` < CLI flags."""
    settings = Settings()
    settings = replace(settings, sources={f.name: "default" for f in fields(settings) if f.name != "sources"})
    if pyproject_table:
        settings = settings.with_overrides(pyproject_table, "pyproject")
    env = os.environ if environ is None else environ
    from_env = {key: env[f"FALEMU_{key.upper()}"] for key in ENV_KEYS if f"FALEMU_{key.upper()}" in env}
    settings = settings.with_overrides(from_env, "env")
    if cli:
        settings = settings.with_overrides(cli, "cli")
    return settings
