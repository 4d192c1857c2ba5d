"""Building and finding app images on the engine.

Dockerfile apps are built through the Engine API (the Docker SDK's low-level ``APIClient.build``),
streaming ``Step n/N`` progress as events, and tagged ``falemu/<app>:<content hash>`` so an unchanged
app reuses its image. Build ``secrets`` need BuildKit, which the Engine API build of the SDK cannot
drive: only for those, falemu runs ``docker buildx build --secret`` and says so clearly when buildx is
missing. Prebuilt images are used when present on the engine and pulled otherwise, with the app's
``registries`` credentials.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from falemu import __version__
from falemu.config.model import AppConfig, RegistryAuth
from falemu.errors import ImageError
from falemu.events import BuildFinished, BuildOutput, BuildStarted, BuildStep, EventSink
from falemu.runtime import labels
from falemu.runtime.context import (
    DOCKERFILE_NAME,
    BuildContext,
    dockerfile_instructions,
    effective_build_args,
    load_context,
)
from falemu.runtime.engine import first_line

_STEP = re.compile(r"^Step (\d+)/(\d+) : (.*)$")
TAIL = 20
# Lines the classic builder adds around each step; they say nothing about why a step failed.
_ENGINE_NOISE = re.compile(r"^(---> |Removing intermediate container |Successfully built |Successfully tagged )")
# The classic builder colours a step's stderr (ESC[91m ... ESC[0m, the reset often on a line of its own).
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class BuildFailed(ImageError):
    """The project's Dockerfile did not build: a step failed (``step``/``steps``/``instruction`` name it,
    ``output`` holds its last lines) or the Dockerfile itself was refused (``step`` 0). A mistake in the
    project, like a config error: exit code 2."""

    exit_code = 2

    def __init__(self, message: str, *, hint: str | None, step: int, steps: int, instruction: str, output: list[str]):
        super().__init__(message, hint=hint)
        self.step = step
        self.steps = steps
        self.instruction = instruction
        self.output = output


def image_repository(app: AppConfig) -> str:
    """``falemu/<app>``, in the characters a repository name may have; a long name is cut and given a
    short hash of the whole (Docker refuses repository names over 255 characters)."""
    name = re.sub(r"[^a-z0-9._-]+", "-", app.alias.lower())
    name = re.sub(r"[._-]{2,}", "-", name).strip("-._") or "app"  # one separator between letters and digits
    if len(name) > 64:
        name = f"{name[:55].rstrip('-._')}-{hashlib.sha256(app.alias.encode()).hexdigest()[:8]}"
    return f"falemu/{name}"


def app_context(app: AppConfig, environ: Mapping[str, str] | None = None) -> BuildContext:
    assert app.image is not None
    assert app.image.dockerfile is not None
    dockerfile = app.image.dockerfile
    if not dockerfile.is_absolute():
        dockerfile = app.project_root / dockerfile
    try:
        text = dockerfile.read_text(encoding="utf-8")
    except OSError as exc:
        raise BuildFailed(
            f"cannot read the Dockerfile {dockerfile}: {exc.strerror}",
            hint="check image.dockerfile (a path relative to the pyproject's folder)",
            step=0,
            steps=0,
            instruction="",
            output=[],
        ) from None
    args = effective_build_args(app.image.build_args, text, environ)
    return load_context(app.project_root, dockerfile, args)


# ``client`` below is a function giving the Docker SDK client (connected on first use: only a build or a
# pull needs it), ``exists`` one telling whether the engine has an image (runtime.engine_api).


def build_image(
    client: Callable[[], Any], exists: Callable[[str], bool], app: AppConfig, events: EventSink, verbose: bool = False
) -> tuple[str, bool, float]:
    """Build the app's Dockerfile unless an image of the same content exists: ``(tag, built, seconds)``."""
    ctx = app_context(app)
    assert app.image is not None
    tag = f"{image_repository(app)}:{ctx.digest[:16]}"
    return build_context(client, app, ctx, tag, events, app.image.secrets, exists=exists)


def build_context(
    client: Callable[[], Any],
    app: AppConfig,
    ctx: BuildContext,
    tag: str,
    events: EventSink,
    secrets: Mapping[str, str],
    *,
    exists: Callable[[str], bool],
    announce: bool = True,
    image_labels: Mapping[str, str] | None = None,
) -> tuple[str, bool, float]:
    """Build ``ctx`` as ``tag`` unless that tag exists: ``(tag, built, seconds)``.

    ``announce=False`` leaves BuildStarted/BuildFinished to the caller (the build is one part of a larger one).
    ``image_labels`` replaces falemu's labels naming the app (for an image several apps share).
    """
    labels_ = dict(image_labels) if image_labels is not None else _image_labels(app, ctx)
    if exists(tag):
        if announce:
            events(BuildFinished(app.alias, image=tag, cached=True, seconds=0.0))
        return tag, False, 0.0
    started = time.monotonic()
    # The Engine API build gets falemu's labels as one LABEL step at the end of the Dockerfile.
    steps = len(dockerfile_instructions(ctx.dockerfile_text)) + (1 if labels_ else 0)
    if announce:
        events(BuildStarted(app.alias, image=tag, steps=steps))
    if secrets:
        _build_with_buildkit(app, ctx, tag, events, secrets, labels_)
    else:
        _build_with_api(client(), app, ctx, tag, steps, events, labels_)
    seconds = time.monotonic() - started
    if announce:
        events(BuildFinished(app.alias, image=tag, cached=False, seconds=seconds))
    return tag, True, seconds


def _image_labels(app: AppConfig, ctx: BuildContext) -> dict[str, str]:
    return {labels.APP: app.alias, labels.IMAGE_HASH: ctx.digest, labels.VERSION: __version__}


def _build_with_api(
    client: Any,
    app: AppConfig,
    ctx: BuildContext,
    tag: str,
    steps: int,
    events: EventSink,
    image_labels: Mapping[str, str],
) -> None:
    from docker.errors import APIError

    step, instruction = 0, ""
    tail: deque[str] = deque(maxlen=TAIL)
    error: str | None = None
    try:
        stream = client.api.build(
            fileobj=_labelled(ctx, image_labels).tar(),
            custom_context=True,
            dockerfile=DOCKERFILE_NAME,
            tag=tag,
            buildargs=dict(ctx.build_args),
            rm=True,
            forcerm=True,
            pull=False,
            decode=True,
        )
        for chunk in stream:
            if "error" in chunk:
                error = str(chunk.get("error") or chunk.get("errorDetail", {}).get("message", "")).strip()
                break
            text = chunk.get("stream")
            if not isinstance(text, str):
                continue
            for line in _ANSI.sub("", text).rstrip("\n").splitlines():
                match = _STEP.match(line.strip())
                if match:
                    step, steps, instruction = int(match[1]), int(match[2]), match[3]
                    tail.clear()
                    events(BuildStep(app.alias, step=step, steps=steps, text=instruction))
                elif line.strip():
                    if not _ENGINE_NOISE.match(line.strip()):
                        tail.append(line.rstrip())  # the step's own output, for the error hint
                    events(BuildOutput(app.alias, line=line.rstrip()))
    except APIError as exc:
        error = first_line(str(exc.explanation or exc))
    if error is None:
        return
    _raise_build_failed(app, step, steps, instruction, error, list(tail))


def _labelled(ctx: BuildContext, image_labels: Mapping[str, str]) -> BuildContext:
    """The context with the image labels as one LABEL instruction at the end of its Dockerfile: one build
    step, where the Engine API's ``labels`` option adds one step (a container and a commit) per label."""
    if not image_labels:
        return ctx
    line = "LABEL " + " ".join(f"{key}={json.dumps(value)}" for key, value in image_labels.items())
    text = ctx.dockerfile_text if ctx.dockerfile_text.endswith("\n") else ctx.dockerfile_text + "\n"
    return dataclasses.replace(ctx, dockerfile_text=text + line + "\n")


def _raise_build_failed(app: AppConfig, step: int, steps: int, instruction: str, error: str, tail: list[str]) -> None:
    where = f"at step {step}/{steps} ({instruction})" if step else "before its first step"
    lines = "\n  ".join(tail[-10:]) if tail else "(no output)"
    if "pull access denied" in error or ("not found" in error and "manifest" in error) or "lookup" in error:
        hint = (
            "the base image cannot be pulled here; use a local one, e.g. FALEMU_BUILD_ARG_<NAME>=<image> "
            f"for a FROM ${{NAME}} build arg. Last output:\n  {lines}"
        )
    elif not step:
        hint = "fix the Dockerfile: the engine refused it before running any of its steps"
    else:
        hint = f"fix that Dockerfile step. Its last output lines:\n  {lines}"
    raise BuildFailed(
        f"image build of {app.alias} failed {where}: {first_line(error)}",
        hint=hint,
        step=step,
        steps=steps,
        instruction=instruction,
        output=tail,
    )


def buildkit_available() -> bool:
    docker_cli = shutil.which("docker")
    if docker_cli is None:
        return False
    try:
        out = subprocess.run([docker_cli, "buildx", "version"], capture_output=True, timeout=20, check=False)
    except (OSError, subprocess.SubprocessError):
        return False
    return out.returncode == 0


def _secret_value(value: str, environ: Mapping[str, str]) -> str | None:
    if value.startswith("$") and len(value) > 1:
        return environ.get(value[1:])
    return value


def _build_with_buildkit(
    app: AppConfig,
    ctx: BuildContext,
    tag: str,
    events: EventSink,
    secrets: Mapping[str, str],
    image_labels: Mapping[str, str],
) -> None:
    if not buildkit_available():
        raise ImageError(
            f"{app.alias} has build secrets (image.secrets), which need BuildKit, "
            "and `docker buildx` is not available here",
            hint="install the docker buildx plugin (or use Docker Desktop), or pass the values as build_args instead",
        )
    docker_cli = shutil.which("docker") or "docker"
    with tempfile.TemporaryDirectory(prefix="falemu-build-") as tmp:
        tmpdir = Path(tmp)
        context_tar = tmpdir / "context.tar"
        context_tar.write_bytes(ctx.tar().getvalue())
        cmd = [docker_cli, "buildx", "build", "--load", "--progress=plain", "-t", tag, "-f", DOCKERFILE_NAME]
        for key, value in ctx.build_args.items():
            cmd += ["--build-arg", f"{key}={value}"]
        for key, value in image_labels.items():
            cmd += ["--label", f"{key}={value}"]
        for index, (name, raw) in enumerate(secrets.items()):
            secret = _secret_value(raw, os.environ)
            if secret is None:
                raise ImageError(
                    f"build secret {name} of {app.alias} reads the environment variable {raw[1:]}, which is not set",
                    hint=f"export {raw[1:]}=... before running falemu",
                )
            secret_file = tmpdir / f"secret-{index}"
            secret_file.write_text(secret, encoding="utf-8")
            secret_file.chmod(0o600)
            cmd += ["--secret", f"id={name},src={secret_file}"]
        cmd.append("-")
        tail: deque[str] = deque(maxlen=TAIL)
        with open(context_tar, "rb") as stdin:
            proc = subprocess.Popen(cmd, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            assert proc.stdout is not None
            for line in proc.stdout:
                tail.append(line.rstrip())
                events(BuildOutput(app.alias, line=line.rstrip()))
            code = proc.wait()
        if code != 0:
            error = next((line for line in reversed(tail) if "ERROR" in line or "error" in line), f"exit code {code}")
            _raise_build_failed(app, 0, 0, "", error, list(tail))


def registry_of(ref: str) -> str:
    """The registry host of an image reference (``docker.io`` for Docker Hub names)."""
    first, sep, _ = ref.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return first
    return "docker.io"


def _registry_matches(key: str, registry: str) -> bool:
    host = re.sub(r"^https?://", "", key).split("/")[0]
    hub = {"docker.io", "index.docker.io", "registry-1.docker.io"}
    return host == registry or (host in hub and registry in hub)


def registry_credentials(
    ref: str, registries: Mapping[str, RegistryAuth], environ: Mapping[str, str]
) -> dict[str, str] | None:
    registry = registry_of(ref)
    for key, auth in registries.items():
        if not _registry_matches(key, registry):
            continue
        password = auth.password
        if password.startswith("$") and len(password) > 1:
            name = password[1:]
            if name not in environ:
                raise ImageError(
                    f"the password for registry {key} is ${name}, and the environment variable {name} is not set",
                    hint=f"export {name}=<token> before running falemu",
                )
            password = environ[name]
        return {"username": auth.username, "password": password}
    return None


def ensure_image(
    client: Callable[[], Any],
    exists: Callable[[str], bool],
    app: AppConfig,
    events: EventSink,
    environ: Mapping[str, str] | None = None,
) -> str:
    """The app's prebuilt image: local when present, else pulled. Raises ImageError saying why not."""
    assert app.image is not None
    assert app.image.image is not None
    ref = app.image.image
    if exists(ref):
        events(BuildFinished(app.alias, image=ref, cached=True, seconds=0.0))
        return ref
    from docker.errors import APIError, DockerException

    env = os.environ if environ is None else environ
    auth = registry_credentials(ref, app.image.registries, env)
    started = time.monotonic()
    repo, tag = _split_tag(ref)
    try:
        client().api.pull(repo, tag=tag, auth_config=auth)
    except (APIError, DockerException) as exc:
        reason = first_line(str(getattr(exc, "explanation", None) or exc))
        raise ImageError(
            f"image {ref} is not on the engine and could not be pulled: {reason}",
            hint=(
                "check the name and your network, add credentials under image.registries"
                if auth is None
                else "check the name, your network and the image.registries credentials"
            )
            + f", or load it first (docker load / docker pull {ref})",
        ) from None
    events(BuildFinished(app.alias, image=ref, cached=False, seconds=time.monotonic() - started))
    return ref


def _split_tag(ref: str) -> tuple[str, str | None]:
    if "@" in ref:
        return ref, None
    name, sep, tag = ref.rpartition(":")
    if sep and "/" not in tag:
        return name, tag
    return ref, "latest"
