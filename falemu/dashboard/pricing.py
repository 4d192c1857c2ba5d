"""Machine prices for the dashboard's cost figures: a data file naming its sources, overridable.

``prices.json`` beside this module holds fal's public hourly prices per machine type with where and
when each was read. A user file of the same shape (``[tool.falemu] prices = "prices.json"`` or
``FALEMU_PRICES``) is merged over it: its ``machines`` entries replace or add machine types.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from falemu.errors import ConfigError


@dataclass(frozen=True)
class Prices:
    machines: dict[str, dict[str, Any]]
    currency: str = "USD"
    sources: list[dict[str, Any]] = field(default_factory=list)
    note: str = ""
    override: str | None = None  # the user file merged over the defaults

    def hourly(self, machine_type: str) -> float | None:
        entry = self.machines.get(machine_type) or self.machines.get(machine_type.upper())
        value = entry.get("hourly") if entry else None
        return float(value) if isinstance(value, int | float) else None

    def per_second(self, machine_type: str, gpus: int = 0) -> float | None:
        """The price of one runner-second (times the GPU count for multi-GPU machines)."""
        hourly = self.hourly(machine_type)
        return None if hourly is None else hourly / 3600 * max(1, gpus)

    def to_dict(self) -> dict[str, Any]:
        return {
            "currency": self.currency,
            "note": self.note,
            "sources": self.sources,
            "override": self.override,
            "machines": [{"machine_type": k, **v} for k, v in sorted(self.machines.items())],
        }


def default_prices() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(resources.files("falemu.dashboard").joinpath("prices.json").read_text())
    return data


def load_prices(override: Path | str | None = None) -> Prices:
    """The default price table, with ``override`` (a JSON file) merged over it."""
    data = default_prices()
    machines: dict[str, dict[str, Any]] = dict(data.get("machines", {}))
    sources = list(data.get("sources", []))
    currency = str(data.get("currency", "USD"))
    if override:
        path = Path(override).expanduser()
        try:
            user = json.loads(path.read_text())
        except OSError as exc:
            raise ConfigError(
                f"cannot read the price file {path}: {exc.strerror or exc}", hint="fix the path"
            ) from None
        except ValueError as exc:
            raise ConfigError(
                f"the price file {path} is not valid JSON: {exc}", hint="see falemu/dashboard/prices.json"
            ) from None
        if not isinstance(user, dict) or not isinstance(user.get("machines", {}), dict):
            raise ConfigError(
                f"the price file {path} must be an object with a 'machines' object",
                hint='for example {"machines": {"GPU-H100": {"hourly": 2.5}}}',
            )
        for name, entry in user.get("machines", {}).items():
            if isinstance(entry, int | float):
                entry = {"hourly": entry}
            if not isinstance(entry, dict) or not isinstance(entry.get("hourly"), int | float | type(None)):
                raise ConfigError(
                    f"the price file {path}: machine {name!r} needs a number 'hourly'",
                    hint='for example "GPU-H100": {"hourly": 2.5}',
                )
            machines[str(name)] = {**entry, "source": entry.get("source", str(path))}
        sources = [*sources, {"url": str(path), "what": "user override"}]
        currency = str(user.get("currency", currency))
    return Prices(
        machines=machines,
        currency=currency,
        sources=sources,
        note=str(data.get("note", "")),
        override=str(override) if override else None,
    )
