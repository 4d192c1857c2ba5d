"""What the gateway knows about each app: its parsed config and the pool that leases its runners."""

from __future__ import annotations

from dataclasses import dataclass

from falemu.config.model import AppConfig
from falemu.scaling.pool import RunnerPool


@dataclass(frozen=True)
class GatewayApp:
    config: AppConfig
    pool: RunnerPool
