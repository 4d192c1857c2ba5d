"""fal 1.83.0's parse-time validators (``fal/cli/_utils.py``, ``fal/sdk.py``, ``fal/container.py``).

Each raises :class:`~falemu.errors.ConfigError` with fal's message word for word.
"""

from __future__ import annotations

from typing import Any

from falemu.errors import ConfigError

VALID_REGIONS = frozenset({"us-west", "us-central", "us-east", "eu-north", "eu-west"})
VALID_RETRY_CONDITIONS = frozenset({"timeout", "server_error", "connection_error"})
AUTH_MODES = ("public", "private", "shared")
DEPLOYMENT_STRATEGIES = ("recreate", "rolling")

_REGIONS_HINT = "valid regions: " + ", ".join(sorted(VALID_REGIONS))


def validate_regions(regions: Any) -> None:
    if not (isinstance(regions, list) and all(isinstance(item, str) for item in regions)):
        raise ConfigError("regions must be a list of strings.", hint='for example regions = ["us-east"]')
    invalid = set(regions) - VALID_REGIONS
    if invalid:
        raise ConfigError(
            f"Invalid regions: {', '.join(sorted(invalid))}. Valid regions are: {', '.join(sorted(VALID_REGIONS))}",
            hint=_REGIONS_HINT,
        )


def validate_requirements(requirements: Any) -> None:
    is_str_list = isinstance(requirements, list) and all(isinstance(item, str) for item in requirements)
    is_str_list_list = isinstance(requirements, list) and all(
        isinstance(item, list) and all(isinstance(req, str) for req in item) for item in requirements
    )
    if not is_str_list and not is_str_list_list:
        raise ConfigError(
            "requirements must be a list of strings or a list of lists of strings.",
            hint='for example requirements = ["fastapi", "uvicorn"]',
        )


def validate_str_list(field_name: str, value: Any) -> None:
    if not (isinstance(value, list) and all(isinstance(item, str) for item in value)):
        raise ConfigError(f"{field_name} must be a list of strings.", hint=f'for example {field_name} = ["..."]')


def validate_int(field_name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(f"{field_name} must be an integer.", hint=f"write {field_name} as a whole number, unquoted")


def validate_bool(field_name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ConfigError(f"{field_name} must be a boolean.", hint=f"write {field_name} = true or false, unquoted")


def validate_port(field_name: str, value: Any) -> None:
    validate_int(field_name, value)
    if value < 0 or value > 65535:
        raise ConfigError(f"{field_name} must be between 0 and 65535.", hint="for example 8000")


def validate_skip_retry_conditions(value: Any) -> None:
    validate_str_list("skip_retry_conditions", value)
    invalid = set(value) - VALID_RETRY_CONDITIONS
    if invalid:
        raise ConfigError(
            f"Invalid skip_retry_conditions: {', '.join(sorted(invalid))}. "
            f"Valid conditions are: {', '.join(sorted(VALID_RETRY_CONDITIONS))}",
            hint="valid conditions: " + ", ".join(sorted(VALID_RETRY_CONDITIONS)),
        )


def validate_retry_config(value: Any) -> dict[str, dict[str, int]]:
    """``fal.sdk.validate_retry_config_dict``: returns the normalised table (negative retries become 0)."""
    hint = "for example retry_config = { server_error = { retries = 3 } }"
    if not isinstance(value, dict):
        raise ConfigError("retry_config must be a mapping of condition -> {retries: int}", hint=hint)
    normalized: dict[str, dict[str, int]] = {}
    for cond, entry in value.items():
        if cond not in VALID_RETRY_CONDITIONS:
            raise ConfigError(
                f"Invalid retry_config condition: {cond}. "
                f"Valid conditions are: {', '.join(sorted(VALID_RETRY_CONDITIONS))}",
                hint=hint,
            )
        if not isinstance(entry, dict) or set(entry) != {"retries"}:
            raise ConfigError(
                f'retry_config[{cond!r}] must be an object of the form {{"retries": <non-negative int>}}', hint=hint
            )
        retries = entry["retries"]
        if not isinstance(retries, int) or isinstance(retries, bool):
            raise ConfigError(f"retry_config[{cond!r}]['retries'] must be an integer", hint=hint)
        normalized[cond] = {"retries": max(retries, 0)}
    if not normalized:
        raise ConfigError("retry_config must have at least one condition.", hint=hint)
    return normalized


def validate_command_override(name: str, value: Any) -> None:
    """``fal.container._validate_command_override``."""
    if value is None or isinstance(value, str):
        return
    if isinstance(value, list) and all(isinstance(part, str) for part in value):
        return
    raise ConfigError(
        f"{name} must be a string or list of strings.", hint=f'for example {name} = ["python", "-m", "app"]'
    )
