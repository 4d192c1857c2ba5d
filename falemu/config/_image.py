"""The ``image`` sub-table: ``_build_container_image_from_toml`` and ``ContainerImage`` of fal 1.83.0.

Validation order is fal's, because it decides which error a file with several mistakes shows:
dockerfile/image presence and types, the Dockerfile read, then for an image reference the build-key,
entrypoint, cmd and registries checks before the unexpected-key check, and for a Dockerfile the
unexpected-key check before the Dockerfile-content, registries, entrypoint and cmd checks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from falemu.config._hints import unexpected_keys_hint
from falemu.config._validators import validate_command_override
from falemu.errors import ConfigError

PASSTHROUGH_KEYS = ("build_args", "secrets", "registries", "entrypoint", "cmd")
IMAGE_KEYS = ("dockerfile", "image", *PASSTHROUGH_KEYS)

_EMPTY_DOCKERFILE = (
    "Invalid dockerfile: Dockerfile is required.\n"
    "Either use ContainerImage.from_dockerfile_str() or "
    "ContainerImage.from_dockerfile() to create a container image."
)
_REGISTRY_HINT = 'for example registries = { "ghcr.io" = { username = "me", password = "$GHCR_TOKEN" } }'


@dataclass(frozen=True)
class ParsedImage:
    """The image table after fal's checks, values still as written."""

    dockerfile: Path | None  # absolute
    dockerfile_text: str | None
    image: str | None
    use_isolate: bool | None
    context_dir: Path
    passthrough: dict[str, Any] = field(default_factory=dict)


def parse_image(app_name: str, image_config: Any, project_root: Path, *, use_isolate: bool | None) -> ParsedImage:
    if not isinstance(image_config, dict):
        raise ConfigError(
            f"App {app_name} image must be a table in pyproject.toml",
            hint=f'write [tool.fal.apps.{app_name}.image] with dockerfile = "Dockerfile" or image = "repo:tag"',
        )
    config = dict(image_config)
    dockerfile_path = config.pop("dockerfile", None)
    image_ref = config.pop("image", None)
    if dockerfile_path is None and image_ref is None:
        raise ConfigError(
            f"App {app_name} image must specify either 'dockerfile' (path) "
            "or 'image' (container image) in pyproject.toml",
            hint='add dockerfile = "Dockerfile" (built from the pyproject folder) or image = "repo:tag"',
        )
    if dockerfile_path is not None and image_ref is not None:
        raise ConfigError(
            f"App {app_name} image must specify only one of 'dockerfile' or 'image' in pyproject.toml",
            hint="keep dockerfile to build the image, or image to use a prebuilt one; remove the other",
        )
    if dockerfile_path is not None and not isinstance(dockerfile_path, str):
        raise ConfigError(
            f"App {app_name} image.dockerfile must be a string in pyproject.toml",
            hint='for example dockerfile = "Dockerfile"',
        )
    if image_ref is not None and not (isinstance(image_ref, str) and image_ref.strip()):
        raise ConfigError(
            f"App {app_name} image.image must be a non-empty string in pyproject.toml",
            hint='for example image = "ghcr.io/org/app:tag"',
        )

    resolved: Path | None = None
    text: str | None = None
    if dockerfile_path is not None:
        resolved = Path(dockerfile_path)
        if not resolved.is_absolute():
            resolved = project_root / resolved
        text = _read_dockerfile(app_name, resolved)
    else:
        _reject_image_reference_build_keys(config)

    passthrough = {key: config.pop(key) for key in PASSTHROUGH_KEYS if key in config}

    if dockerfile_path is None:
        validate_command_override("entrypoint", passthrough.get("entrypoint"))
        validate_command_override("cmd", passthrough.get("cmd"))
        _validate_image_registries(passthrough.get("registries"))

    if config:
        raise ConfigError(
            f"Found unexpected keys in app {app_name} image: {config}",
            hint=unexpected_keys_hint(config, IMAGE_KEYS, where="image"),
        )

    if text is not None:
        _container_image_checks(text, passthrough, project_root)

    return ParsedImage(
        dockerfile=resolved,
        dockerfile_text=text,
        image=image_ref,
        use_isolate=use_isolate,
        context_dir=project_root,
        passthrough=passthrough,
    )


def _read_dockerfile(app_name: str, path: Path) -> str:
    try:
        with open(path) as f:  # the locale's encoding, as fal reads it
            return f.read()
    except FileNotFoundError:
        raise ConfigError(
            f"App {app_name} image.dockerfile not found: {path}",
            hint="dockerfile is relative to the folder of pyproject.toml",
        ) from None
    except (OSError, ValueError) as exc:  # a folder, no permission, a NUL in the path, not decodable
        raise ConfigError(str(exc), hint=f"image.dockerfile must name a readable file: {path}") from None


def _reject_image_reference_build_keys(config: dict[str, Any]) -> None:
    build_keys = {"build_args", "secrets"} & config.keys()
    if build_keys:
        invalid = ", ".join(f"{key!r}" for key in sorted(build_keys))
        raise ConfigError(
            f"Image key(s) {invalid} are only supported with image.dockerfile in pyproject.toml",
            hint="a prebuilt image is not built, so it takes no build_args or build secrets; "
            "use dockerfile instead of image, or remove them",
        )


def _validate_image_registries(registries: Any) -> None:
    if registries is None:
        return
    if not isinstance(registries, dict):
        raise ConfigError("registries must be a table in pyproject.toml", hint=_REGISTRY_HINT)
    for registry in registries.values():
        if not isinstance(registry, dict):
            raise ConfigError("Each registry must be a table in pyproject.toml", hint=_REGISTRY_HINT)
        if "username" not in registry or "password" not in registry:
            raise ConfigError("Username and password are required for each registry", hint=_REGISTRY_HINT)


def _container_image_checks(text: str, passthrough: dict[str, Any], context_dir: Path) -> None:
    """``ContainerImage.__post_init__`` for a Dockerfile image (its checks on what toml can set)."""
    if not text or not text.strip():
        raise ConfigError(_EMPTY_DOCKERFILE, hint="the Dockerfile is empty; write at least a FROM line")
    _check_dockerignore(context_dir / ".dockerignore")
    registries: Any = passthrough.get("registries")
    if registries:
        # fal calls .values() / .keys() without a type check; a list or string fails with Python's own message.
        if not isinstance(registries, dict):
            raise ConfigError(f"{type(registries).__name__!r} object has no attribute 'values'", hint=_REGISTRY_HINT)
        for registry in registries.values():
            if not isinstance(registry, dict):
                raise ConfigError(f"{type(registry).__name__!r} object has no attribute 'keys'", hint=_REGISTRY_HINT)
            if "username" not in registry or "password" not in registry:
                raise ConfigError("Username and password are required for each registry", hint=_REGISTRY_HINT)
    validate_command_override("entrypoint", passthrough.get("entrypoint"))
    validate_command_override("cmd", passthrough.get("cmd"))


def _check_dockerignore(path: Path) -> None:
    """fal turns each ``.dockerignore`` line into a regex with pathspec and fails on a line it cannot convert.

    The check runs when pathspec is installed (it comes with fal); without it the file is not checked.
    """
    if not path.is_file():
        return
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except (OSError, ValueError) as exc:
        raise ConfigError(str(exc), hint=f"make {path} readable") from None
    try:
        from pathspec.patterns.gitwildmatch import GitWildMatchPattern
    except ImportError:  # pragma: no cover - pathspec comes with fal
        return
    for line in lines:
        pattern = line.strip()
        if not pattern or pattern.startswith("#"):
            continue
        try:
            GitWildMatchPattern.pattern_to_regex(pattern)
        except ValueError as exc:
            raise ConfigError(str(exc), hint=f"fix or remove that line of {path}") from None
