"""A fal.App's image and how its runners are served (Proxy App Mode on the Docker engine).

The image is made in three parts, each tagged by a hash of what went into it, so an unchanged App is
never rebuilt and a change rebuilds only from the part it touches:

1. **base**: the App's ``ContainerImage`` (its Dockerfile text, built in its ``context_dir`` with the
   COPY/ADD sources fal would upload, its build args and build secrets), or the pyproject's prebuilt
   ``image``, or, for an App with only ``requirements``, a Python image of this machine's minor version
   (``python:X.Y-slim``; the ``python_image`` setting / ``FALEMU_PYTHON_IMAGE`` overrides it);
2. **fal layer**: fal at this machine's version, fal's serve requirements and the App's requirements,
   installed with pip from a wheelhouse falemu downloads on this machine for the image's Python
   (:mod:`falemu.runtime.wheelhouse`), so the container needs no network; plus the runner-side
   ``FALEMU_PUBLIC_ADDRESSES`` shim in its site-packages. It is one layer: a container installs from
   the wheels copied into it, removes them and is committed;
3. **app**: the App's Python files under ``/opt/falemu/app`` and the command that serves it
   (:mod:`falemu.runtime.runner_files.falemu_serve`: fal's own ``App.serve`` on 8080, metrics on
   9090), as the image's entrypoint, so ``docker run IMAGE`` serves the App as a runner does.

fal requires the image's Python minor version to be this machine's (it pickles the App here); a
mismatch stops the build with both versions named.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shlex
import sys
import tarfile
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from falemu import __version__
from falemu.config.falapp import FalApp
from falemu.config.model import AppConfig, ImageConfig
from falemu.errors import ConfigError, ImageError, RunnerError, StartupTimeout
from falemu.events import BuildFinished, BuildOutput, BuildStarted, BuildStep, EventSink, Notice
from falemu.runtime import labels
from falemu.runtime.context import DEFAULT_IGNORE, IgnoreMatcher, effective_build_args, make_context, selected_files
from falemu.runtime.engine import first_line
from falemu.runtime.engine_api import EngineAPI, EngineCallError, as_call_error
from falemu.runtime.images import build_context, ensure_image, image_repository
from falemu.runtime.wheelhouse import Target, ensure_wheelhouse, pip_wheel

APP_DIR = "/opt/falemu/app"
SERVE = "/opt/falemu/falemu_serve.py"
WHEELS = "/tmp/falemu-wheels"
RUNNER_FILES = Path(__file__).with_name("runner_files")
SHIM_FILES = ("falemu_public_addresses.py", "falemu_public_addresses.pth")
PYTHON_LABEL = "falemu.python"
FAL_LAYER_REPOSITORY = "falemu/fal-sdk-layer"
BASE_REPOSITORY = "falemu/fal-app-base"
TAIL = 30

_PROBE = r"""
import json, os, platform, sys, sysconfig
libc, libc_version = platform.libc_ver()
print("FALEMU-PYTHON " + json.dumps({
    "executable": sys.executable,
    "version": "%d.%d.%d" % sys.version_info[:3],
    "implementation": sys.implementation.name,
    "purelib": sysconfig.get_paths()["purelib"],
    "libc": libc,
    "libc_version": libc_version,
    "machine": platform.machine(),
}))
"""
_FIND_PYTHON = (
    'for p in python3 python; do if command -v $p >/dev/null 2>&1; then exec $p -c "$0"; fi; done; '
    "echo 'FALEMU-NO-PYTHON'; exit 127"
)


@dataclass(frozen=True)
class ImagePython:
    """The Python of a base image, as a container of it reports."""

    executable: str
    version: str
    implementation: str
    purelib: str
    libc: str
    libc_version: str
    machine: str

    @property
    def minor(self) -> str:
        return ".".join(self.version.split(".")[:2])


def default_python_image(environ: Mapping[str, str] | None = None) -> str:
    """The base of an App with no image: ``FALEMU_PYTHON_IMAGE``, else ``python:<this machine's X.Y>-slim``."""
    env = os.environ if environ is None else environ
    return env.get("FALEMU_PYTHON_IMAGE") or f"python:{sys.version_info[0]}.{sys.version_info[1]}-slim"


def readiness(app: AppConfig) -> tuple[str | None, str]:
    """What tells that a runner is ready: ``(path, method)``; fal.Apps answer ``GET /health`` after setup()."""
    check = app.health_check
    if check is not None:
        default = "POST" if app.fal_app is not None else "GET"  # fal sends a fal.App's health check as POST
        return check.path, (check.method or default).upper()
    if app.fal_app is not None:
        return "/health", "GET"
    return None, "GET"


def serve_command(app: AppConfig, python: str) -> list[str]:
    """The runner's command: fal's App.serve on 8080 (metrics on ``metrics_port``, 9090 by default)."""
    fal_app = app.fal_app
    assert fal_app is not None
    target = f"{APP_DIR}/{fal_app.file.name}"
    return [python, SERVE, target, fal_app.class_name, "8080", str(app.metrics_port or 9090)]


def setup_traceback(logs: str) -> list[str] | None:
    """The traceback of a ``setup()`` that raised, from a runner's log (uvicorn logs it at lifespan start-up
    and then exits with code 3; what fal's serve loop prints afterwards is about that exit, not the cause)."""
    lines = logs.splitlines()
    end = next((i for i, line in enumerate(lines) if "Application startup failed" in line), None)
    if end is None:
        return None
    start = next((i for i in range(end, -1, -1) if re.sub(r"^ERROR:\s*", "", lines[i]).startswith("Traceback")), None)
    if start is None:
        return None
    block = [line for line in lines[start:end] if line.strip()]
    return block or None


def explain_startup_failure(error: RunnerError, logs: str) -> RunnerError:
    """A fal.App runner that exited during start-up: name ``setup()``'s exception and keep its traceback."""
    block = setup_traceback(logs)
    if block is None or isinstance(error, StartupTimeout):
        return error
    cause = block[-1].strip()
    return RunnerError(
        f"{error.message}: setup() raised {cause}",
        hint="fix setup(); its traceback is in the runner's log (shown below)",
        error_type=error.error_type,
        logs="\n".join(block) + "\n",
        exit_code=error.container_exit_code,
    )


def requirement_layers(fal_app: FalApp) -> list[list[str]]:
    """What pip installs, in order: fal with its serve requirements, then the App's own (a layer per list)."""
    first = [f"fal=={fal_app.fal_version}", *fal_app.serve_requirements]
    layers = [first]
    own = list(fal_app.requirements)
    if own and all(isinstance(item, tuple | list) for item in own):
        layers += [[str(r) for r in layer] for layer in own if layer]
    elif own:
        layers.append([str(r) for r in own])
    return layers


def app_files(fal_app: FalApp) -> list[str]:
    """The App's Python files (its folder, recursively, without ignored folders), relative to that folder."""
    folder = fal_app.file.parent
    ignore = folder / ".dockerignore"
    patterns = list(DEFAULT_IGNORE)
    if ignore.is_file():
        patterns += [s for line in ignore.read_text(encoding="utf-8").splitlines() if (s := line.strip())]
    matcher = IgnoreMatcher([p for p in patterns if p not in ("Dockerfile", "Dockerfile.*", "*.md")])
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        base = Path(dirpath).relative_to(folder)
        dirnames[:] = sorted(d for d in dirnames if not matcher.ignored((base / d).as_posix(), is_dir=True))
        for name in filenames:
            rel = (base / name).as_posix()
            if name.endswith(".py") and not matcher.ignored(rel):
                found.append(rel)
    return sorted(found)


def _digest(*parts: bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(hashlib.sha256(part).digest())
    return digest.hexdigest()


def _files_digest(root: Path, files: list[str]) -> bytes:
    digest = hashlib.sha256()
    for rel in files:
        digest.update(rel.encode() + b"\0" + (root / rel).read_bytes() + b"\0")
    return digest.digest()


def _runner_file(name: str) -> bytes:
    return (RUNNER_FILES / name).read_bytes()


class FalAppImages:
    """Builds and finds fal.App images on one engine (see the module docstring)."""

    def __init__(
        self,
        client: Callable[[], Any],
        api: EngineAPI,
        *,
        python_image: str | None = None,
        cache_dir: Path | None = None,
    ) -> None:
        self._connect = client  # the Docker SDK client, asked for only to build
        self._api = api  # what an unchanged App's image needs: lookups (runtime.engine_api)
        self._python_image = python_image
        self._cache_dir = cache_dir
        self._pythons: dict[str, ImagePython] = {}
        self._lock = threading.Lock()
        self._layer_locks: dict[str, threading.Lock] = {}  # one install per fal layer at a time

    @property
    def _client(self) -> Any:
        return self._connect()

    @property
    def cache_dir(self) -> Path:
        if self._cache_dir is not None:
            return self._cache_dir
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        return Path(base) / "falemu"

    def python_image(self) -> str:
        return self._python_image or default_python_image()

    def prepare(self, app: AppConfig, events: EventSink, verbose: bool = False) -> tuple[str, bool, float, str]:
        """The App's image, built unless unchanged: ``(tag, built, seconds, python executable)``."""
        try:
            return self._prepare(app, events)
        except Exception as exc:
            error = as_call_error(exc)
            if error is None:
                raise
            if error.status == 404:
                raise ImageError(
                    f"building the image of {app.alias}: the engine lost what falemu was working with "
                    f"({first_line(error.explanation)})",
                    hint="a container or image was removed meanwhile (`falemu down`, `docker rm`); run again",
                ) from None
            raise ImageError(
                f"building the image of {app.alias} failed: {first_line(error.explanation)}",
                hint="check the engine (falemu doctor) and run again",
            ) from None

    def _prepare(self, app: AppConfig, events: EventSink) -> tuple[str, bool, float, str]:
        fal_app = app.fal_app
        assert fal_app is not None
        started = time.monotonic()
        base, base_built = self._base(app, fal_app, events)
        base_image = self._api.image(base)
        if base_image is None:
            raise EngineCallError(404, f"no such image: {base}")
        base_id = str(base_image["Id"])
        layers = requirement_layers(fal_app)
        host = f"{sys.version_info[0]}.{sys.version_info[1]}"
        fal_key = _digest(
            base_id.encode(),
            json.dumps(layers).encode(),
            host.encode(),
            *(_runner_file(name) for name in SHIM_FILES),
            __version__.encode(),
        )
        files = app_files(fal_app)
        app_key = _digest(
            fal_key.encode(),
            _files_digest(fal_app.file.parent, files),
            _runner_file("falemu_serve.py"),
            json.dumps(serve_command(app, "python")).encode(),
        )
        repo = image_repository(app)
        tag = f"{repo}:{app_key[:16]}"
        found = self._api.image(tag)
        if found is not None:
            python = str((found.get("Config") or {}).get("Labels", {}).get(PYTHON_LABEL) or "python3")
            events(BuildFinished(app.alias, image=tag, cached=True, seconds=0.0))
            return tag, False, time.monotonic() - started, python
        events(BuildStarted(app.alias, image=tag, steps=3))
        events(BuildStep(app.alias, step=1, steps=3, text=f"base image {base}" + (" (built)" if base_built else "")))
        image_python = self._image_python(app, base, base_id)
        if image_python.minor != host:
            raise ConfigError(
                f"the image of {app.alias} runs Python {image_python.version} and this machine runs "
                f"{'.'.join(map(str, sys.version_info[:3]))}: fal requires the same minor version",
                hint=f"base the image on Python {host} (for example python:{host}-slim), or run falemu with "
                f"Python {image_python.minor}",
            )
        fal_tag = f"{FAL_LAYER_REPOSITORY}:{fal_key[:16]}"  # shared by Apps with the same base and requirements
        events(
            BuildStep(
                app.alias,
                step=2,
                steps=3,
                text=f"fal {fal_app.fal_version} and {sum(len(x) for x in layers) - 1} requirement(s) "
                f"for {image_python.executable} {image_python.version}",
            )
        )
        with self._lock:
            layer_lock = self._layer_locks.setdefault(fal_tag, threading.Lock())
        with layer_lock:
            if not self._api.has_image(fal_tag):
                self._fal_layer(app, base, fal_tag, layers, image_python, events)
        events(BuildStep(app.alias, step=3, steps=3, text=f"the App's files under {APP_DIR} and its serve command"))
        self._app_layer(app, fal_tag, tag, files, image_python, app_key, events)
        seconds = time.monotonic() - started
        events(BuildFinished(app.alias, image=tag, cached=False, seconds=seconds))
        return tag, True, seconds, image_python.executable

    # -- the parts ---------------------------------------------------------------------------------------

    def _base(self, app: AppConfig, fal_app: FalApp, events: EventSink) -> tuple[str, bool]:
        image = fal_app.image
        if image is not None and image.dockerfile is not None:
            args = effective_build_args(image.build_args, image.dockerfile)
            root = image.context_dir
            files = selected_files(root, image.sources, image.ignore) if root.is_dir() else []
            ctx = make_context(root, image.dockerfile, files, args)
            # Content-addressed and named after no app: Apps with the same image share it and its fal layer.
            tag = f"{BASE_REPOSITORY}:{ctx.digest[:16]}"
            shared = {labels.IMAGE_HASH: ctx.digest, labels.VERSION: __version__}
            built_tag, built, _ = build_context(
                self._connect,
                app,
                ctx,
                tag,
                events,
                image.secrets,
                announce=False,
                image_labels=shared,
                exists=self._api.has_image,
            )
            return built_tag, built
        if image is not None and image.image is not None:
            prebuilt = replace(app, image=ImageConfig(image=image.image, registries=image.registries))
            return ensure_image(self._connect, self._api.has_image, prebuilt, _quiet(events)), False
        name = self.python_image()
        if not self._api.has_image(name):
            try:
                python_app = replace(app, image=ImageConfig(image=name))
                ensure_image(self._connect, self._api.has_image, python_app, _quiet(events))
            except ImageError as exc:
                raise ImageError(
                    f"{app.alias} has no image, so it runs on {name}, which is not on the engine and could not "
                    f"be pulled: {exc.message.rpartition(': ')[2]}",
                    hint="point FALEMU_PYTHON_IMAGE (or [tool.falemu] python_image) at a local Python "
                    f"{sys.version_info[0]}.{sys.version_info[1]} image, or pull {name} where a registry answers",
                ) from None
        return name, False

    def _image_python(self, app: AppConfig, image: str, image_id: str) -> ImagePython:
        if image_id in self._pythons:
            return self._pythons[image_id]
        api = self._client.api
        container = api.create_container(
            image,
            entrypoint=["/bin/sh", "-c"],
            command=[_FIND_PYTHON, _PROBE],
            labels=labels.runner_labels(app.alias, "image-check"),
        )["Id"]
        try:
            api.start(container)
            code = api.wait(container, timeout=120).get("StatusCode")
            output = api.logs(container).decode(errors="replace")
        except Exception as exc:
            raise ImageError(
                f"cannot run the image {image} of {app.alias} to find its Python: {first_line(str(exc))}",
                hint="the image needs /bin/sh and python3 (or python) on its PATH",
            ) from None
        finally:
            _remove(api, container)
        line = next((x for x in output.splitlines() if x.startswith("FALEMU-PYTHON ")), None)
        if line is None:
            raise ConfigError(
                f"the image {image} of {app.alias} has no python3 or python on its PATH (exit code {code})",
                hint="fal installs itself into the image's Python: install Python "
                f"{sys.version_info[0]}.{sys.version_info[1]} in the Dockerfile",
            )
        found = ImagePython(**json.loads(line.partition(" ")[2]))
        if found.implementation != "cpython" or found.libc != "glibc":
            raise ConfigError(
                f"the image {image} of {app.alias} runs {found.implementation} with libc {found.libc or 'unknown'}: "
                "falemu installs fal from manylinux wheels, which need CPython on glibc",
                hint="base the image on a Debian or Ubuntu Python image (not Alpine)",
            )
        self._pythons[image_id] = found
        return found

    def _fal_layer(
        self,
        app: AppConfig,
        base: str,
        tag: str,
        layers: list[list[str]],
        python: ImagePython,
        events: EventSink,
    ) -> None:
        target = Target(python=python.minor, machine=python.machine, glibc=python.libc_version)
        wheels = ensure_wheelhouse(layers, target, self.cache_dir, app=app.alias, events=events)
        pip = f"{WHEELS}/{pip_wheel(wheels)}/pip"
        count = len(list(wheels.glob("*.whl")))
        events(Notice(app.alias, level="info", message=f"installing {count} wheels into the image (a minute or so)"))
        installs = [
            " ".join(
                [
                    shlex.quote(python.executable),
                    shlex.quote(pip),
                    "install --no-index --find-links",
                    WHEELS,
                    "--break-system-packages --disable-pip-version-check --root-user-action=ignore "
                    "--no-warn-script-location --progress-bar off",
                    *(shlex.quote(r) for r in layer),
                ]
            )
            for layer in layers
        ]
        script = " && ".join(
            [
                "set -e",
                *installs,
                f"cp /opt/falemu/shim/* {shlex.quote(python.purelib)}/",
                f"rm -rf {WHEELS} /opt/falemu/shim /root/.cache/pip",
            ]
        )
        api = self._client.api
        config = api.inspect_image(base)["Config"] or {}
        user = config.get("User") or ""
        container = api.create_container(
            base,
            entrypoint=["/bin/sh", "-c"],
            command=[script],
            user="0",
            labels=labels.runner_labels(app.alias, "image-build"),
            environment={"PIP_BREAK_SYSTEM_PACKAGES": "1", "PIP_NO_INPUT": "1"},
        )["Id"]
        try:
            archive = io.BytesIO()
            with tarfile.open(fileobj=archive, mode="w") as tar:
                for path in sorted(wheels.glob("*.whl")):
                    tar.add(str(path), arcname=f"{WHEELS.lstrip('/')}/{path.name}")
                for name in SHIM_FILES:
                    _add_bytes(tar, f"opt/falemu/shim/{name}", _runner_file(name))
            api.put_archive(container, "/", archive.getvalue())
            api.start(container)
            tail: deque[str] = deque(maxlen=TAIL)
            for chunk in api.logs(container, stream=True, follow=True):
                for line in chunk.decode(errors="replace").splitlines():
                    if line.strip():
                        tail.append(line.rstrip())
                        events(BuildOutput(app.alias, line=line.rstrip()))
            code = api.wait(container).get("StatusCode")
            if code != 0:
                reason = next((x for x in reversed(tail) if x.startswith("ERROR")), f"exit code {code}")
                raise ImageError(
                    f"installing fal and the requirements of {app.alias} into its image failed: {reason}",
                    hint="pip's last lines:\n  " + "\n  ".join(list(tail)[-10:]),
                )
            # The install container's config becomes the image's: put back what the base image said.
            changes = [f"USER {user or 'root'}", "ENV PYTHONUNBUFFERED=1"]
            changes += _command_changes(config)
            # Shared by every App with this base and these requirements: it belongs to none of them.
            changes += [f"LABEL {k}=" for k in (labels.APP, labels.RUNNER, labels.OWNER, labels.OWNER_STARTED)]
            api.commit(container, repository=tag.rpartition(":")[0], tag=tag.rpartition(":")[2], changes=changes)
        finally:
            _remove(api, container)

    def _app_layer(
        self,
        app: AppConfig,
        fal_tag: str,
        tag: str,
        files: list[str],
        python: ImagePython,
        key: str,
        events: EventSink,
    ) -> None:
        fal_app = app.fal_app
        assert fal_app is not None
        api = self._client.api
        container = api.create_container(fal_tag, labels=labels.runner_labels(app.alias, "image-build"))["Id"]
        try:
            archive = io.BytesIO()
            with tarfile.open(fileobj=archive, mode="w") as tar:
                for rel in files:
                    _add_bytes(tar, f"{APP_DIR.lstrip('/')}/{rel}", (fal_app.file.parent / rel).read_bytes())
                _add_bytes(tar, SERVE.lstrip("/"), _runner_file("falemu_serve.py"))
            api.put_archive(container, "/", archive.getvalue())
            command = serve_command(app, python.executable)
            image_labels = {
                labels.APP: app.alias,
                labels.IMAGE_HASH: key,
                labels.VERSION: __version__,
                PYTHON_LABEL: python.executable,
                "falemu.python-version": python.version,
                "falemu.fal-app": f"{fal_app.file.name}::{fal_app.class_name}",
            }
            changes = [f"ENTRYPOINT {json.dumps(command)}", "CMD []", "EXPOSE 8080"]
            changes += [f"LABEL {k}={json.dumps(v)}" for k, v in image_labels.items()]
            changes += [f"LABEL {k}=" for k in (labels.RUNNER, labels.OWNER, labels.OWNER_STARTED)]
            api.commit(container, repository=tag.rpartition(":")[0], tag=tag.rpartition(":")[2], changes=changes)
        finally:
            _remove(api, container)
        events(BuildOutput(app.alias, line=f"{len(files)} Python file(s) of {fal_app.file.parent} in {APP_DIR}"))


def _command_changes(config: Mapping[str, Any]) -> list[str]:
    entrypoint = config.get("Entrypoint")
    cmd = config.get("Cmd")
    return [f"ENTRYPOINT {json.dumps(list(entrypoint or []))}", f"CMD {json.dumps(list(cmd or []))}"]


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    tar.addfile(info, io.BytesIO(data))


def _remove(api: Any, container: str) -> None:
    try:
        api.remove_container(container, force=True, v=True)
    except Exception:
        pass


def _quiet(events: EventSink) -> EventSink:
    """``events`` without BuildFinished (the fal.App build reports the whole image once)."""

    def sink(event: Any) -> None:
        if not isinstance(event, BuildFinished):
            events(event)

    return sink
