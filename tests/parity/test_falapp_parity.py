"""Parity of fal.App settings with fal 1.83.0: fal's own loader is the oracle.

Each case is an app file (and maybe a pyproject) in its own folder. The oracle runs what ``fal run
<ref>`` / ``fal deploy <name>`` run before they talk to fal's servers (``get_app_data_from_toml``,
``load_function_from``) in a fresh interpreter in that folder, and prints the options fal would send;
falemu resolves the same app (``falemu.config.falapp.resolve``) and must hold the same values, with
fal's server defaults where fal sends nothing. Where each value came from (class, pyproject, default)
is checked against what the case was written to show.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import pytest

from falemu.config import load_project
from falemu.config.falapp import resolve
from falemu.config.model import AppConfig, ScalingConfig

ORACLE = textwrap.dedent(
    """
    import json, os, sys
    from fal.api import FalServerlessHost
    from fal.sdk import FalServerlessKeyCredentials
    from fal.utils import load_function_from
    from fal.cli._utils import get_app_data_from_toml
    from fal.cli.parser import RefAction

    target = sys.argv[1]
    options = app_name = app_auth = None
    if "::" in target or target.endswith(".py"):
        file, cls = RefAction.split_ref(target)
        file = os.path.abspath(file)
    else:
        data = get_app_data_from_toml(target)
        options, app_name, app_auth = data.options, data.name, data.auth
        file, cls = RefAction.split_ref(data.ref)
    host = FalServerlessHost(url="x", local_file_path=file, credentials=FalServerlessKeyCredentials("a", "b"))
    loaded = load_function_from(host, file, cls, options=options, app_name=app_name, app_auth=app_auth)
    opts = loaded.function.options
    image = opts.environment.get("image")
    if image is not None and not isinstance(image, dict):
        image = image.to_dict()
    check = opts.host.get("health_check_config")
    print(json.dumps({
        "host": {k: v for k, v in opts.host.items() if k not in ("metadata", "health_check_config")},
        "requirements": opts.environment.get("requirements"),
        "kind": opts.environment.get("kind"),
        "image": None if image is None else {
            "dockerfile_str": image.get("dockerfile_str"),
            "build_args": image.get("build_args"),
            "context_dir": image.get("docker_context_dir"),
        },
        "exposed_port": opts.gateway.get("exposed_port"),
        "app_name": loaded.app_name,
        "app_auth": loaded.app_auth,
        "health_check": None if check is None else check.path,
    }, default=str))
    """
)

HEADER = "import fal\nfrom fal.container import ContainerImage\nfrom pydantic import BaseModel\n\n\n"
ENDPOINT = '\n    @fal.endpoint("/run")\n    def run(self, payload: dict) -> dict:\n        return payload\n'
DOCKERFILE = "ARG BASE_IMAGE=python:3.11-slim\\nFROM ${BASE_IMAGE}\\nCOPY server.py /srv/server.py\\n"


@dataclass(frozen=True)
class Case:
    id: str
    body: str  # the class(es), after HEADER; ENDPOINT is appended to the last class
    target: str  # a pyproject app name or a ref
    pyproject: str = ""  # [tool.fal.apps...] tables
    files: dict[str, str] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)  # falemu key -> expected source


def app_table(name: str, body: str = "", ref: str = "app.py::App") -> str:
    return f'[tool.fal.apps.{name}]\nref = "{ref}"\n{body}'


CASES = [
    Case(
        "class-kwargs",
        "class App(fal.App, keep_alive=300, max_concurrency=1, min_concurrency=0, max_multiplexing=3):",
        "app.py::App",
        sources={"keep_alive": "class", "max_concurrency": "class", "machine_type": "default", "name": "derived"},
    ),
    Case(
        "class-variables",
        "class App(fal.App):\n    keep_alive = 120\n    max_multiplexing = 4\n    request_timeout = 30\n"
        "    startup_timeout = 90\n    request_start_timeout = 12\n    scaling_delay = 5",
        "app.py::App",
        sources={"keep_alive": "class", "request_timeout": "class", "scaling_delay": "class"},
    ),
    Case(
        "pyproject-replaces-app-defaults",
        "class App(fal.App):",
        "svc",
        pyproject=app_table("svc", 'keep_alive = 15\nmax_concurrency = 3\nmachine_type = "M"\nstartup_timeout = 45\n'),
        sources={"keep_alive": "pyproject", "max_concurrency": "pyproject", "machine_type": "pyproject"},
    ),
    Case(
        "explicit-class-beats-pyproject",
        'class App(fal.App, keep_alive=300):\n    machine_type = "L"\n    max_multiplexing = 2',
        "svc",
        pyproject=app_table("svc", 'keep_alive = 5\nmachine_type = "XL"\nmax_multiplexing = 8\nmin_concurrency = 2\n'),
        sources={
            "keep_alive": "class",
            "machine_type": "class",
            "max_multiplexing": "class",
            "min_concurrency": "pyproject",
        },
    ),
    Case(
        "machine-type-list-on-the-class",
        'class App(fal.App):\n    machine_type = ["GPU-H100", "GPU-A100"]\n    num_gpus = 2',
        "app.py::App",
        sources={"machine_type": "class", "num_gpus": "class"},
    ),
    Case(
        "machine-type-list-in-pyproject",
        "class App(fal.App):",
        "svc",
        pyproject=app_table("svc", 'machine_type = ["GPU-A100", "GPU-A6000"]\nnum_gpus = 1\n'),
        sources={"machine_type": "pyproject", "num_gpus": "pyproject"},
    ),
    Case(
        "image-from-a-string",
        f'class App(fal.App):\n    image = ContainerImage.from_dockerfile_str("{DOCKERFILE}", '
        'build_args={"BASE_IMAGE": "python:3.11-slim"})',
        "app.py::App",
        files={"server.py": "print('hi')\n"},
        sources={"image": "class"},
    ),
    Case(
        "image-from-a-file",
        'class App(fal.App, max_concurrency=2):\n    image = ContainerImage.from_dockerfile("docker/App.Dockerfile")',
        "svc",
        pyproject=app_table("svc", "keep_alive = 33\n"),
        files={"docker/App.Dockerfile": DOCKERFILE.replace("\\n", "\n"), "server.py": "print('hi')\n"},
        sources={"image": "class", "keep_alive": "pyproject", "max_concurrency": "class"},
    ),
    Case(
        "image-from-the-pyproject",
        "class App(fal.App):",
        "svc",
        pyproject=app_table("svc", '[tool.fal.apps.svc.image]\ndockerfile = "Dockerfile"\n'),
        files={"Dockerfile": DOCKERFILE.replace("\\n", "\n"), "server.py": "print('hi')\n"},
        sources={"image": "pyproject"},
    ),
    Case(
        "requirements-only",
        'class App(fal.App):\n    requirements = ["numpy==2.1.0", "pillow>=10"]',
        "app.py::App",
        sources={"requirements": "class", "image": "default"},
    ),
    Case(
        "pyproject-requirements-beside-the-class",
        "class App(fal.App):",
        "svc",
        pyproject=app_table("svc", 'requirements = ["requests"]\n'),
    ),
    Case(
        "secrets-data-mounts-grace",
        'class App(fal.App):\n    secrets = ["HF_TOKEN"]\n    data_mounts = ["/data/.cache"]\n'
        "    termination_grace_period_seconds = 30\n    concurrency_buffer = 1\n    concurrency_buffer_perc = 20",
        "app.py::App",
        sources={"secrets": "class", "data_mounts": "class", "termination_grace_period_seconds": "class"},
    ),
    Case(
        "name-and-auth",
        'class App(fal.App, name="custom-name"):\n    app_auth = "public"',
        "app.py::App",
        sources={"name": "class", "auth": "class"},
    ),
    Case(
        "pyproject-name-and-auth",
        'class App(fal.App, name="custom-name"):\n    app_auth = "public"',
        "svc",
        pyproject=app_table("svc", 'name = "renamed"\nauth = "shared"\n'),
        sources={"name": "pyproject", "auth": "pyproject"},
    ),
    Case(
        "inherited-settings",
        "class Base(fal.App, keep_alive=200):\n    machine_type = 'M'\n\n\nclass App(Base):\n    max_concurrency = 4",
        "svc",
        pyproject=app_table("svc", 'keep_alive = 9\nmachine_type = "XS"\n'),
        sources={"keep_alive": "class", "machine_type": "class", "max_concurrency": "class"},
    ),
    Case(
        "exposed-port-and-concurrency-from-pyproject",
        "class App(fal.App):",
        "svc",
        pyproject=app_table(
            "svc", "exposed_port = 9000\nconcurrency_buffer_perc = 50\nscaling_delay = 3\nrequest_timeout = 100\n"
        ),
        sources={"exposed_port": "pyproject", "concurrency_buffer_perc": "pyproject", "request_timeout": "pyproject"},
    ),
]


def _write(case: Case, folder: Path) -> None:
    (folder / ".git").mkdir()
    (folder / "app.py").write_text(HEADER + case.body + "\n" + ENDPOINT)
    if case.pyproject:
        (folder / "pyproject.toml").write_text("[project]\nname = 'p'\n\n" + case.pyproject)
    for name, text in case.files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)


def _oracle(folder: Path, target: str) -> subprocess.Popen[str]:
    """fal's loader in a fresh interpreter, started now and read later (it runs beside falemu's)."""
    return subprocess.Popen(
        [sys.executable, "-c", ORACLE, target], cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _answer(proc: subprocess.Popen[str]) -> dict[str, Any]:
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err[-3000:]
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def _falemu(folder: Path, target: str) -> AppConfig:
    project = load_project(folder) if (folder / "pyproject.toml").is_file() else None
    return resolve(project, target, cwd=folder)


SCALE_KEYS = [f.name for f in fields(ScalingConfig) if f.name != "keep_alive"]
DEFAULTS = ScalingConfig()  # fal's server defaults, where fal sends nothing


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_settings_equal_fal_loader(case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write(case, tmp_path)
    monkeypatch.chdir(tmp_path)
    oracle = _oracle(tmp_path, case.target)
    try:
        app = _falemu(tmp_path, case.target)
    finally:
        fal = _answer(oracle)
    assert app.fal_app is not None
    host = fal["host"]

    assert app.scaling.keep_alive == host["keep_alive"]
    for key in SCALE_KEYS:
        sent = host.get(key)
        expected = sent if sent is not None else getattr(DEFAULTS, key)
        assert getattr(app.scaling, key) == expected, key
    machine = host["machine_type"]
    assert app.machine_types == (tuple(machine) if isinstance(machine, list) else (machine,))
    assert app.num_gpus == host.get("num_gpus")
    assert app.secrets == tuple(host.get("secrets") or ())
    assert app.data_mounts == (tuple(host["data_mounts"]) if host.get("data_mounts") is not None else None)
    flat = [r for r in app.fal_app.requirements if isinstance(r, str)]
    assert flat + list(app.fal_app.serve_requirements) == fal["requirements"]
    assert app.exposed_port == fal["exposed_port"]
    assert app.alias == fal["app_name"]
    assert app.auth == fal["app_auth"]
    assert (app.health_check.path if app.health_check else None) == fal["health_check"]
    if fal["image"] is None:
        assert app.fal_app.image is None
    else:
        image = app.fal_app.image
        assert image is not None
        assert image.dockerfile == fal["image"]["dockerfile_str"]
        assert dict(image.build_args) == (fal["image"]["build_args"] or {})
        assert str(image.context_dir) == fal["image"]["context_dir"]
        assert image.sources == ("server.py",)  # the COPY sources: what fal sends as the build context
    for key, source in case.sources.items():
        assert app.sources.get(key) == source, key


def test_at_least_twelve_variants() -> None:
    assert len(CASES) >= 12
    kinds = {c.id for c in CASES}
    for needed in ("class-kwargs", "class-variables", "image-from-a-string", "image-from-a-file", "requirements-only"):
        assert needed in kinds
