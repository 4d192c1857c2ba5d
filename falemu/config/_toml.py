"""Reading pyproject.toml the way fal does.

fal 1.83.0 parses with ``tomli`` (2.x, which also accepts TOML 1.1 syntax such as multi-line inline
tables). falemu uses ``tomli`` too when it is installed, so a file fal accepts is never rejected here,
and falls back to the standard library's ``tomllib`` (TOML 1.0) otherwise.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from falemu.errors import ConfigError

_AT = re.compile(r"\s*\(at line (\d+), column (\d+)\)\s*$")
_AT_END = re.compile(r"\s*\(at end of document\)\s*$")


def _loads(text: str) -> dict[str, Any]:
    try:
        import tomli
    except ImportError:  # pragma: no cover - tomli comes with fal; tomllib is the fallback
        import tomllib

        return tomllib.loads(text)
    return tomli.loads(text)


def _decode_errors() -> tuple[type[Exception], ...]:
    import tomllib

    errors: list[type[Exception]] = [tomllib.TOMLDecodeError]
    try:
        import tomli
    except ImportError:  # pragma: no cover
        pass
    else:
        errors.append(tomli.TOMLDecodeError)
    return tuple(errors)


def load_toml(path: Path) -> dict[str, Any]:
    """The parsed document at ``path``; a syntax error becomes a ConfigError naming file, line and column."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"Cannot read {path}: {exc.strerror or exc}", hint="check the file's permissions") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"Invalid TOML in {path}: not UTF-8 (byte {exc.start})", hint="save pyproject.toml as UTF-8"
        ) from None
    try:
        return _loads(text)
    except _decode_errors() as exc:
        raise _syntax_error(path, exc) from None


def _syntax_error(path: Path, exc: Exception) -> ConfigError:
    message = str(exc)
    line = getattr(exc, "lineno", None)
    column = getattr(exc, "colno", None)
    reason = getattr(exc, "msg", None)
    match = _AT.search(message)
    if match:
        line = line or int(match.group(1))
        column = column or int(match.group(2))
        reason = reason or message[: match.start()]
    reason = _AT_END.sub("", reason or message)
    hint = "fix the TOML syntax there; fal stops with the same error (tomli.TOMLDecodeError)"
    if line is not None and column is not None:
        return ConfigError(f"Invalid TOML in {path} at line {line}, column {column}: {reason}", hint=hint)
    return ConfigError(f"Invalid TOML in {path}: {reason}", hint=hint)
