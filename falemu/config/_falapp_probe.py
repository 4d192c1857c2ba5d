"""Load one fal.App with fal's own loader and describe it as JSON (runs in a child interpreter).

falemu never imports fal or the app in its own process: :mod:`falemu.config.falapp` runs this file's
source with ``python -c`` in a subprocess of the host interpreter, in the folder ``fal run`` / ``fal
deploy`` would run in, and reads the JSON it writes. An app that raises at import, or imports
something heavy, only costs that subprocess.

What it runs is what ``fal run <ref>`` and ``fal deploy <name>`` run before they talk to fal's
servers: ``fal.cli._utils.get_app_data_from_toml`` for a pyproject app (the pyproject falemu found),
then ``fal.utils.load_function_from`` (runpy of the file, ``_find_target``, ``wrap_app``, the merge of
pyproject options with fal's precedence). Two of fal's functions are wrapped only to record what
they decided (which pyproject keys replaced App defaults, and the options the class gave before the
merge), so every value can be reported with its source.

Arguments: one JSON object ``{"file", "class", "toml", "app", "out"}``; the result goes to ``out``.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import sys
import traceback
from pathlib import Path, PurePath
from typing import Any

# Host options every App sets (fal.App.host_kwargs defaults and wrap_app's own); shown as defaults.
SCALE_KEYS = (
    "keep_alive",
    "min_concurrency",
    "max_concurrency",
    "max_multiplexing",
    "concurrency_buffer",
    "concurrency_buffer_perc",
    "scaling_delay",
    "request_timeout",
    "request_start_timeout",
    "startup_timeout",
    "termination_grace_period_seconds",
)
CLASS_ATTRIBUTES = ("machine_type", "num_gpus", "regions", "requirements", "image", "app_name", "app_auth")


def jsonable(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = [jsonable(v) for v in value]
        return sorted(items, key=repr) if isinstance(value, set | frozenset) else items
    if type(value).__name__ == "ContainerImage":
        return image_description(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    return repr(value)


def image_description(image: Any) -> dict[str, Any]:
    """A ``ContainerImage``: what falemu needs to build it, including the gitignore-style ignore patterns."""
    from fal.container import DockerignoreHandler

    patterns = DockerignoreHandler(
        context_dir=image.context_dir, dockerignore=image.dockerignore, dockerignore_path=image.dockerignore_path
    ).get_patterns()
    return {
        "dockerfile_str": image.dockerfile_str,
        "context_dir": str(Path(image.context_dir).absolute()),
        "build_args": jsonable(image.build_args),
        "registries": jsonable(image.registries),
        "secrets": jsonable(image.secrets),
        "builder": image.builder,
        "entrypoint": jsonable(image.entrypoint),
        "cmd": jsonable(image.cmd),
        "use_isolate": image.use_isolate,
        "dockerignore": list(patterns),
        "docker_files_list": image.get_copy_add_sources(),
    }


def toml_image_description(image: dict[str, Any], toml_dir: str) -> dict[str, Any]:
    """``[tool.fal.apps.X.image]`` as fal's TOML reader leaves it (``ContainerImage.to_dict()``)."""
    from fal.container import DEFAULT_DOCKERIGNORE_PATTERNS, DockerignoreHandler

    context = image.get("docker_context_dir") or toml_dir
    patterns = (
        DockerignoreHandler(context_dir=Path(context)).get_patterns() if context else DEFAULT_DOCKERIGNORE_PATTERNS
    )
    return {
        "dockerfile_str": image.get("dockerfile_str"),
        "image": image.get("image"),
        "context_dir": str(context),
        "build_args": jsonable(image.get("build_args") or {}),
        "registries": jsonable(image.get("registries") or {}),
        "secrets": jsonable(image.get("secrets") or {}),
        "builder": image.get("builder"),
        "entrypoint": jsonable(image.get("entrypoint")),
        "cmd": jsonable(image.get("cmd")),
        "use_isolate": image.get("use_isolate"),
        "dockerignore": list(patterns),
        "docker_files_list": jsonable(image.get("docker_files_list") or []),
    }


def defined_by_app(cls: type, name: str, base: type) -> bool:
    """True when a class between ``cls`` and fal.App (inclusive of ``cls``) sets ``name`` itself."""
    for klass in cls.__mro__:
        if klass is base:
            return False
        if name in vars(klass):
            return True
    return False


def main(args: dict[str, Any]) -> dict[str, Any]:
    record: dict[str, Any] = {}
    # `fal run` puts the working folder on sys.path (load_function_from); -c put it first: undo that.
    if sys.path and sys.path[0] in ("", os.getcwd()):
        sys.path.pop(0)
    os.environ.pop("IS_ISOLATE_AGENT", None)

    import importlib

    # fal through importlib: this file only drives fal's functions and never relies on their types.
    fal: Any = importlib.import_module("fal")
    fal_utils: Any = importlib.import_module("fal.utils")
    FalServerlessHost = importlib.import_module("fal.api").FalServerlessHost
    App = importlib.import_module("fal.app").App
    FalServerlessKeyCredentials = importlib.import_module("fal.sdk").FalServerlessKeyCredentials

    original_overrides = fal_utils._toml_host_keys_overriding_app_defaults
    original_wrap = fal.wrap_app

    def overrides(app_cls: Any, base: Any, options: Any) -> Any:
        keys = original_overrides(app_cls, base, options)
        record["overrides"] = set(keys)
        return keys

    def wrap(cls: Any, **kwargs: Any) -> Any:
        function = original_wrap(cls, **kwargs)
        record["cls"] = cls
        record["class_options"] = copy.copy(function.options.host), copy.copy(function.options.environment)
        return function

    fal_utils._toml_host_keys_overriding_app_defaults = overrides
    fal.wrap_app = wrap

    options = None
    app_name = app_auth = None
    toml_host: dict[str, Any] = {}
    toml_environment: dict[str, Any] = {}
    toml_gateway: dict[str, Any] = {}
    if args.get("toml"):
        cli_utils: Any = importlib.import_module("fal.cli._utils")

        toml_path = args["toml"]
        cli_utils.find_pyproject_toml = lambda *a, **k: toml_path
        data = cli_utils.get_app_data_from_toml(args["app"], emit_deprecation_warnings=False)
        options, app_name, app_auth = data.options, data.name, data.auth
        toml_host = dict(options.host)
        toml_environment = dict(options.environment)
        toml_gateway = dict(options.gateway)

    host = FalServerlessHost(
        url="localhost", local_file_path=args["file"], credentials=FalServerlessKeyCredentials("falemu", "local")
    )
    loaded = fal_utils.load_function_from(
        host, args["file"], args.get("class"), options=options, app_name=app_name, app_auth=app_auth
    )
    cls = record.get("cls")
    if cls is None:
        return {
            "ok": False,
            "kind": "not-an-app",
            "message": f"{loaded.class_name or args.get('class')} is a @fal.function, not a fal.App",
        }
    function = loaded.function
    class_host, class_environment = record["class_options"]
    toml_won = record.get("overrides", set())

    sources: dict[str, str] = {}
    for key, value in function.options.host.items():
        if key in toml_host and (key in toml_won or key not in class_host):
            sources[key] = "pyproject"
        elif (
            key in getattr(cls, "_explicit_host_kwargs", set())
            or defined_by_app(cls, key, App)
            or (key == "health_check_config" and value is not None)
        ):
            sources[key] = "class"
        else:
            sources[key] = "default"
    sources.pop("metadata", None)
    for key in function.options.environment:
        if key in toml_environment and key not in class_environment:
            sources[f"environment.{key}"] = "pyproject"
        elif key == "image" and cls.image is not None:
            sources["environment.image"] = "class"
        elif key == "requirements" and cls.requirements:
            sources["environment.requirements"] = "class"
        else:
            sources[f"environment.{key}"] = "default"
    for key in function.options.gateway:
        sources[f"gateway.{key}"] = "pyproject" if key in toml_gateway else "default"
    _to_fal_app_name = importlib.import_module("fal.app")._to_fal_app_name

    if app_name is not None:
        sources["app_name"] = "pyproject"
    else:
        sources["app_name"] = "derived" if cls.app_name == _to_fal_app_name(cls.__name__) else "class"
    sources["app_auth"] = "pyproject" if app_auth is not None else ("class" if cls.app_auth else "default")

    environment = dict(function.options.environment)
    image = environment.get("image")
    if sources.get("environment.image") == "class":
        environment["image"] = image_description(cls.image)
    elif isinstance(image, dict):
        environment["image"] = toml_image_description(image, str(Path(args["toml"] or args["file"]).parent))
    user_requirements = list(cls.requirements)
    metadata = function.options.host.get("metadata") or {}
    routes = sorted(getattr(function.func, "_routes", []) or [])
    instance = cls(_allow_init=True)
    realtime = any(signature.is_websocket for signature in instance.collect_routes())
    host_options = {k: v for k, v in function.options.host.items() if k != "metadata"}
    return {
        "ok": True,
        "file": str(Path(args["file"]).absolute()),
        "class_name": loaded.class_name,
        "app_name": loaded.app_name,
        "app_auth": loaded.app_auth,
        "host": jsonable(host_options),
        "environment": jsonable(environment),
        "gateway": jsonable(function.options.gateway),
        "sources": sources,
        "user_requirements": jsonable(user_requirements),
        "openapi": jsonable(metadata.get("openapi") or {}),
        "routes": routes,
        "realtime": realtime,
        "version": str(getattr(cls, "version", "unknown")),
        "python": "{}.{}.{}".format(*sys.version_info[:3]),
        "fal_version": getattr(fal, "__version__", ""),
        "app_bases": [k.__name__ for k in cls.__mro__],
    }


def run(argv: list[str]) -> int:
    args = json.loads(argv[1])
    out = Path(args["out"])
    try:
        result = main(args)
    except BaseException as exc:  # the app's own errors included: report them, never a stack dump here
        frames = traceback.extract_tb(exc.__traceback__)
        user = [f for f in frames if os.path.abspath(f.filename) == os.path.abspath(args["file"])]
        where = user[-1] if user else (frames[-1] if frames else None)
        message = str(exc)
        cause = exc.__cause__
        if cause is not None and str(cause) and str(cause) not in message:
            message = f"{message}: {type(cause).__name__}: {cause}"
        result = {
            "ok": False,
            "kind": "raised",
            "error_type": type(exc).__name__,
            "error_module": type(exc).__module__,
            "message": message,
            "in_app_file": bool(user),
            "where": {"file": where.filename, "line": where.lineno, "code": where.line} if where else None,
            "traceback": "".join(traceback.format_exception(exc)),
        }
    out.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(run(sys.argv))
