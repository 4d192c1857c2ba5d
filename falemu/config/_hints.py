"""Friendly hints shown after fal's own messages ("did you mean `keep_alive`?")."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Any

# Keys fal accepts in the Python API (class options, fal.function kwargs) but not in pyproject.toml.
PYTHON_API_ONLY = frozenset(
    {
        "kind",
        "resolver",
        "local_python_modules",
        "setup_function",
        "metadata",
        "force",
        "serve",
        "_base_image",
        "compile_bytecode",
        "env_dict",
        "env_yml_str",
        "packages",
        "pip",
        "channels",
        "host_kwargs",
        "machine_types",
        "health_check_config",
    }
)


# ContainerImage options of the Python API that the toml image table does not take.
IMAGE_PYTHON_API_ONLY = frozenset(
    {"builder", "compression", "force_compression", "context_dir", "use_isolate", "dockerignore", "dockerignore_path"}
)


def _suggest(key: str, known: Iterable[str]) -> str | None:
    candidates = list(known)
    normalised = key.replace("-", "_").strip()
    if normalised in candidates:
        return normalised
    matches = difflib.get_close_matches(normalised.lower(), candidates, n=1, cutoff=0.6)
    return matches[0] if matches else None


def unexpected_keys_hint(leftover: Mapping[str, Any], known: Iterable[str], *, where: str) -> str:
    """One hint for every leftover key: a close known key, or why the key is not accepted."""
    known = tuple(known)
    parts: list[str] = []
    for key in leftover:
        suggestion = _suggest(str(key), known)
        if where == "image" and key in IMAGE_PYTHON_API_ONLY:
            parts.append(f"`{key}` is a fal.ContainerImage option that the pyproject image table does not accept")
        elif suggestion is not None:
            if "-" in str(key) and suggestion == str(key).replace("-", "_"):
                parts.append(f"did you mean `{suggestion}`? (fal does not turn '-' into '_' inside app tables)")
            else:
                parts.append(f"did you mean `{suggestion}`?")
        elif where == "app" and key == "machine_types":
            parts.append("did you mean `machine_type`? (it takes a string or a list of strings)")
        elif where == "app" and key in PYTHON_API_ONLY:
            parts.append(f"`{key}` is a fal.App/fal.function option that pyproject.toml does not accept")
        else:
            parts.append(f"remove `{key}`; {where} keys fal accepts: {', '.join(sorted(known))}")
    if len(parts) == 1:
        return parts[0]
    return "; ".join(f"`{key}`: {part}" for key, part in zip(leftover, parts, strict=True))
