"""Parity with fal 1.83.0: every case runs through fal's own parser and falemu's.

The oracle is ``fal.cli._utils.get_app_data_from_toml`` (what ``fal deploy <name>`` calls), run in the
case's folder as the fal CLI would be. Both must accept or reject the same files; rejections must carry
the same message word for word; accepted files must resolve to the values fal's options hold.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from falemu.config import AppConfig, AppShape, get_app, load_project
from falemu.errors import ConfigError

DOCKERFILE = "FROM falemu-base:bookworm\nCOPY server.py /app/server.py\nCMD python3 /app/server.py\n"


@dataclass(frozen=True)
class Case:
    id: str
    toml: str | None  # pyproject.toml at the case root; None for no file
    expect: str  # "ok", "error" or "syntax": what fal does, checked too
    app: str = "a"
    cwd: str = "."
    files: dict[str, str] = field(default_factory=dict)  # extra files; "" content for .git markers
    dirs: tuple[str, ...] = ()


def fal_toml(body: str) -> str:
    return "[project]\nname = 'p'\n\n" + body


APP = "[tool.fal.apps.a]\n"
DIRECT = APP + 'exposed_port = 8000\n[tool.fal.apps.a.image]\ndockerfile = "Dockerfile"\n'
DF = {"Dockerfile": DOCKERFILE}


def direct(extra_app: str = "", extra_image: str = "") -> str:
    return fal_toml(
        APP + "exposed_port = 8000\n" + extra_app + '[tool.fal.apps.a.image]\ndockerfile = "Dockerfile"\n' + extra_image
    )


def image_ref(extra_image: str = "", extra_app: str = "") -> str:
    return fal_toml(
        APP + "exposed_port = 8000\n" + extra_app + '[tool.fal.apps.a.image]\nimage = "ghcr.io/o/app:1"\n' + extra_image
    )


def ref_app(extra: str = "") -> str:
    return fal_toml(APP + 'ref = "app.py::MyApp"\n' + extra)


CASES: list[Case] = [
    # --- discovery ---------------------------------------------------------------------------------
    Case("no-pyproject-anywhere", None, "error", dirs=("work",), cwd="work"),
    Case("git-root-without-pyproject", None, "error", dirs=(".git",)),
    Case(
        "git-root-fal-pyproject-in-subdir",
        None,
        "error",
        dirs=(".git",),
        files={"svc/pyproject.toml": fal_toml(ref_app())},
    ),
    Case("git-root-pyproject-without-tool-fal", "[project]\nname='p'\n[tool.other]\nx=1\n", "error", dirs=(".git",)),
    Case("git-root-with-fal-pyproject", ref_app(), "ok", dirs=(".git",)),
    Case("nested-cwd-finds-parent", ref_app(), "ok", dirs=("a/b/c",), cwd="a/b/c"),
    Case("git-between-cwd-and-pyproject", ref_app(), "error", dirs=("a/.git", "a/b"), cwd="a/b"),
    Case(
        "non-fal-pyproject-skipped",
        ref_app(),
        "ok",
        files={"sub/pyproject.toml": "[project]\nname='inner'\n"},
        cwd="sub",
    ),
    Case(
        "empty-tool-fal-table-stops-search",
        ref_app(),
        "error",
        files={"sub/pyproject.toml": "[tool.fal]\n"},
        cwd="sub",
    ),
    Case("git-file-marker", None, "error", files={".git": "gitdir: /elsewhere\n"}),
    Case("toml-syntax-error", fal_toml(APP + "keep_alive = = 3\n"), "syntax"),
    Case(
        "toml-syntax-error-in-passed-pyproject",
        ref_app(),
        "syntax",
        files={"sub/pyproject.toml": "[project\nname='x'\n"},
        cwd="sub",
    ),
    Case(
        "toml-1.1-multiline-inline-table", fal_toml(APP + 'ref = "app.py"\nhealth_check = {\n  path = "/h",\n}\n'), "ok"
    ),
    Case("top-level-key-normalised", fal_toml('[tool.fal."--apps".a]\nref = "app.py"\n'), "ok"),
    Case("top-level-key-case-kept", fal_toml('[tool.fal.Apps.a]\nref = "app.py"\n'), "error"),
    Case("tool-fal-not-a-table", "[tool]\nfal = 1\n", "error"),
    Case("apps-not-a-table", fal_toml("[tool.fal]\napps = [1]\n"), "error"),
    Case("app-not-a-table", fal_toml('[tool.fal.apps]\na = "x"\n'), "error"),
    # --- app entry keys ----------------------------------------------------------------------------
    Case("app-not-found", ref_app(), "error", app="b"),
    Case("no-ref-no-image", fal_toml(APP + "keep_alive = 3\n"), "error"),
    Case("ref-not-string", fal_toml(APP + "ref = 3\n"), "error"),
    Case("entry-point-not-string", fal_toml(APP + "python_entry_point = [1]\n"), "error"),
    Case("ref-and-entry-point", fal_toml(APP + 'ref = "a.py"\npython_entry_point = "m:A"\n'), "error"),
    Case("ref-app-defaults", ref_app(), "ok"),
    Case("entry-point-app", fal_toml(APP + 'python_entry_point = "pkg.mod:App"\nrequirements = ["."]\n'), "ok"),
    Case("entry-point-bad-format-accepted", fal_toml(APP + 'python_entry_point = "pkg.mod"\n'), "ok"),
    Case(
        "entry-point-with-image",
        fal_toml(APP + 'python_entry_point = "pkg.mod:App"\nimage = { dockerfile = "Dockerfile" }\n'),
        "ok",
        files=DF,
    ),
    Case("ref-with-image", fal_toml(APP + 'ref = "app.py::A"\nimage = { image = "repo/x:1" }\n'), "ok"),
    # --- typed keys --------------------------------------------------------------------------------
    Case("requirements-bad", ref_app("requirements = [1, 2]\n"), "error"),
    Case("requirements-mixed", ref_app('requirements = ["a", ["b"]]\n'), "error"),
    Case(
        "requirements-list-of-lists",
        ref_app('requirements = [["a", "b"], ["c"]]\nrequirements_context_dir = "ctx"\n'),
        "ok",
    ),
    Case("requirements-context-dir-not-string", ref_app("requirements_context_dir = 1\n"), "error"),
    Case("python-version-not-string", ref_app("python_version = 3.11\n"), "error"),
    Case("regions-not-list", ref_app('regions = "us-east"\n'), "error"),
    Case("regions-invalid", ref_app('regions = ["us-east", "mars", "eu-west", "atlantis"]\n'), "error"),
    Case("regions-valid", ref_app('regions = ["us-east", "eu-west"]\n'), "ok"),
    Case("app-files-not-list", ref_app('app_files = "src"\n'), "error"),
    Case("app-files-ignore-bad", ref_app("app_files_ignore = [1]\n"), "error"),
    Case("app-files-context-without-files", ref_app('app_files_context_dir = "src"\n'), "error"),
    Case("app-files-context-not-string", ref_app('app_files = ["x"]\napp_files_context_dir = 1\n'), "error"),
    Case(
        "app-files-all",
        ref_app('app_files = ["src", "data"]\napp_files_ignore = ["\\\\.pyc$"]\napp_files_context_dir = "."\n'),
        "ok",
    ),
    Case("app-files-with-image", direct('app_files = ["x"]\n'), "error", files=DF),
    Case("app-files-empty-with-image", direct("app_files = []\n"), "ok", files=DF),
    Case("exposed-port-string", fal_toml(APP + 'exposed_port = "8000"\nimage = { image = "x" }\n'), "error"),
    Case("exposed-port-bool", ref_app("exposed_port = true\n"), "error"),
    Case("exposed-port-out-of-range", ref_app("exposed_port = 70000\n"), "error"),
    Case("exposed-port-negative", ref_app("exposed_port = -1\n"), "error"),
    Case("metrics-port-out-of-range", ref_app("metrics_port = 65536\n"), "error"),
    Case("ports-zero-and-metrics", ref_app("exposed_port = 0\nmetrics_port = 9100\n"), "ok"),
    Case("keep-alive-float", ref_app("keep_alive = 1.5\n"), "error"),
    Case("keep-alive-string", ref_app('keep_alive = "300"\n'), "error"),
    Case("private-logs-not-bool", ref_app('private_logs = "yes"\n'), "error"),
    Case("scheduler-empty", ref_app('_scheduler = ""\n'), "error"),
    Case("scheduler-options-not-table", ref_app('_scheduler_options = "x"\n'), "error"),
    Case("scheduler-ok", ref_app('_scheduler = "nomad"\n_scheduler_options = { storage_region = "us-east" }\n'), "ok"),
    Case("skip-retry-invalid", ref_app('skip_retry_conditions = ["timeout", "oops"]\n'), "error"),
    Case("skip-retry-not-list", ref_app('skip_retry_conditions = "timeout"\n'), "error"),
    Case("retry-config-not-table", ref_app("retry_config = 3\n"), "error"),
    Case("retry-config-bad-condition", ref_app("retry_config = { nope = { retries = 1 } }\n"), "error"),
    Case("retry-config-bad-entry", ref_app("retry_config = { timeout = { retries = 1, x = 2 } }\n"), "error"),
    Case("retry-config-retries-not-int", ref_app('retry_config = { server_error = { retries = "3" } }\n'), "error"),
    Case("retry-config-empty", ref_app("retry_config = {}\n"), "error"),
    Case(
        "retry-config-ok",
        ref_app(
            'skip_retry_conditions = ["timeout"]\n'
            "retry_config = { server_error = { retries = -2 }, timeout = { retries = 4 } }\n"
        ),
        "ok",
    ),
    Case("grace-period-not-int", ref_app('termination_grace_period_seconds = "5"\n'), "error"),
    Case("secrets-not-list", ref_app('secrets = "TOKEN"\n'), "error"),
    Case("data-mounts-not-list", ref_app('data_mounts = "/data"\n'), "error"),
    Case(
        "runtime-lists-ok",
        ref_app(
            'secrets = ["HF_TOKEN"]\ndata_mounts = ["/data"]\n'
            "termination_grace_period_seconds = 12\nprivate_logs = true\n"
        ),
        "ok",
    ),
    # --- health_check ------------------------------------------------------------------------------
    Case("health-check-not-table", ref_app('health_check = "/health"\n'), "error"),
    Case("health-check-no-path", ref_app("health_check = { timeout_seconds = 3 }\n"), "error"),
    Case("health-check-path-not-string", ref_app("health_check = { path = 1 }\n"), "error"),
    Case("health-check-int-field", ref_app('health_check = { path = "/h", failure_threshold = "3" }\n'), "error"),
    Case("health-check-bool-field", ref_app('health_check = { path = "/h", call_regularly = 1 }\n'), "error"),
    Case("health-check-unexpected", ref_app('health_check = { path = "/h", interval = 5, methd = "GET" }\n'), "error"),
    Case(
        "health-check-direct-gets-get",
        direct('health_check = { path = "/health", timeout_seconds = 5 }\n'),
        "ok",
        files=DF,
    ),
    Case(
        "health-check-direct-method-kept",
        direct('health_check = { path = "/health", method = "post" }\n'),
        "ok",
        files=DF,
    ),
    Case(
        "health-check-ref-no-method",
        ref_app('health_check = { path = "/h", start_period_seconds = 30, call_regularly = false }\n'),
        "ok",
    ),
    # --- leftovers and order -----------------------------------------------------------------------
    Case("unexpected-key-misspelt", ref_app("keep_alvie = 300\n"), "error"),
    Case("unexpected-dash-key", ref_app("min-concurrency = 2\n"), "error"),
    Case(
        "unexpected-many-types",
        ref_app('zeta = [1, "b"]\nwhen = 1979-05-27T07:32:00Z\nratio = 0.5\ntable = { k = "v" }\nkind = "container"\n'),
        "error",
    ),
    Case("unexpected-python-api-key", ref_app('resolver = "uv"\n'), "error"),
    Case("no-scale-and-app-scale-settings", ref_app("no_scale = true\napp_scale_settings = true\n"), "error"),
    Case("no-scale-deprecated-ok", ref_app("no_scale = true\n"), "ok"),
    Case(
        "order-image-before-leftovers",
        fal_toml(APP + 'bogus = 1\nimage = { image = "x", context_dir = "." }\n'),
        "error",
    ),
    Case("order-regions-before-keep-alive", ref_app('keep_alive = "x"\nregions = ["mars"]\n'), "error"),
    Case("order-requirements-before-regions", ref_app('regions = ["mars"]\nrequirements = 1\n'), "error"),
    Case("order-health-check-before-image", fal_toml(APP + 'health_check = 1\nimage = "x"\n'), "error"),
    Case("order-entry-before-requirements", fal_toml(APP + "requirements = 1\n"), "error"),
    # --- image table -------------------------------------------------------------------------------
    Case("image-not-table", fal_toml(APP + 'image = "repo/x:1"\n'), "error"),
    Case("image-neither", fal_toml(APP + 'image = { build_args = { A = "1" } }\n'), "error"),
    Case("image-both", fal_toml(APP + 'image = { dockerfile = "Dockerfile", image = "x" }\n'), "error", files=DF),
    Case("image-dockerfile-not-string", fal_toml(APP + "image = { dockerfile = 1 }\n"), "error"),
    Case("image-image-blank", fal_toml(APP + 'image = { image = "  " }\n'), "error"),
    Case("image-dockerfile-missing", fal_toml(APP + 'image = { dockerfile = "docker/Dockerfile.gpu" }\n'), "error"),
    Case("image-dockerfile-is-dir", fal_toml(APP + 'image = { dockerfile = "docker" }\n'), "error", dirs=("docker",)),
    Case(
        "image-dockerfile-empty",
        fal_toml(APP + 'image = { dockerfile = "Dockerfile" }\n'),
        "error",
        files={"Dockerfile": " \n"},
    ),
    Case("image-build-args-with-image", image_ref('build_args = { A = "1" }\n'), "error"),
    Case("image-build-keys-with-image", image_ref('secrets = { S = "x" }\nbuild_args = { A = "1" }\n'), "error"),
    Case("image-cmd-bad", image_ref("cmd = 5\n"), "error"),
    Case("image-entrypoint-bad", image_ref('entrypoint = ["a", 1]\n'), "error"),
    Case("image-registries-not-table", image_ref('registries = ["ghcr.io"]\n'), "error"),
    Case("image-registry-not-table", image_ref('registries = { "ghcr.io" = "token" }\n'), "error"),
    Case("image-registry-no-password", image_ref('registries = { "ghcr.io" = { username = "u" } }\n'), "error"),
    Case(
        "dockerfile-registry-no-password",
        direct("", 'registries = { "ghcr.io" = { username = "u" } }\n'),
        "error",
        files=DF,
    ),
    Case("dockerfile-registries-list", direct("", 'registries = ["ghcr.io"]\n'), "error", files=DF),
    Case("dockerfile-registry-entry-string", direct("", 'registries = { "ghcr.io" = "x" }\n'), "error", files=DF),
    Case("dockerfile-cmd-bad", direct("", "cmd = 5\n"), "error", files=DF),
    Case("image-unexpected-key", image_ref('context_dir = "."\nuse_isolate = false\n'), "error"),
    Case("dockerfile-unexpected-before-cmd", direct("", 'cmd = 5\nbuilder = "depot"\n'), "error", files=DF),
    Case("image-cmd-before-unexpected", image_ref('cmd = 5\nbuilder = "depot"\n'), "error"),
    Case("image-build-args-before-cmd", image_ref("cmd = 5\nbuild_args = {}\n"), "error"),
    Case(
        "dockerignore-invalid-pattern",
        direct(),
        "error",
        files={**DF, ".dockerignore": "# comment\n*.pyc\n!\n"},
    ),
    Case("dockerignore-valid", direct(), "ok", files={**DF, ".dockerignore": "*.md\n!README.md\n**/\n"}),
    Case("dockerignore-ignored-for-image-ref", image_ref(), "ok", files={".dockerignore": "!\n"}),
    # --- accepted shapes ---------------------------------------------------------------------------
    Case(
        "direct-server-full",
        direct(
            'machine_type = "GPU-H100"\nkeep_alive = 300\nmin_concurrency = 1\nmax_concurrency = 4\nauth = "public"\n'
            "max_multiplexing = 3\nconcurrency_buffer = 1\nconcurrency_buffer_perc = 20\nscaling_delay = 5\n"
            "request_timeout = 120\nrequest_start_timeout = 30\nstartup_timeout = 90\nnum_gpus = 2\n",
            'build_args = { BASE = "python:3.11-slim", N = "2" }\nsecrets = { TOKEN = "s3cret" }\n'
            'registries = { "ghcr.io" = { username = "me", password = "$GHCR" } }\n'
            'entrypoint = ["python3"]\ncmd = "-m server --port 8000"\n',
        ),
        "ok",
        files=DF,
    ),
    Case(
        "direct-server-image-ref",
        image_ref(
            'registries = { "https://index.docker.io/v1/" = { username = "u", password = "p" } }\n'
            'entrypoint = "/bin/serve --fast"\ncmd = ["--port", "8000"]\n',
            'machine_type = ["GPU-H100", "GPU-A100"]\n',
        ),
        "ok",
    ),
    Case("direct-server-no-exposed-port", fal_toml(APP + 'image = { image = "repo/x:1" }\n'), "ok"),
    Case("direct-server-absolute-dockerfile", None, "ok", files=DF),  # toml written by the test with tmp path
    Case("auth-bogus-accepted", ref_app('auth = "bogus"\n'), "ok"),
    Case(
        "auth-shared",
        ref_app('auth = "shared"\nname = "custom-alias"\nteam = "acme"\ndeployment_strategy = "recreate"\n'),
        "ok",
    ),
    Case("deployment-strategy-bogus-accepted", ref_app('deployment_strategy = "bluegreen"\n'), "ok"),
    Case(
        "unvalidated-types-accepted",
        ref_app('min_concurrency = "lots"\nmachine_type = 5\nnum_gpus = "x"\nmax_concurrency = 1.5\n'),
        "ok",
    ),
    Case("machine-type-unknown-accepted", ref_app('machine_type = "GPU-Z9000"\n'), "ok"),
    Case("app-scale-settings-true", ref_app("app_scale_settings = true\n"), "ok"),
    Case(
        "numbers-fal-accepts-then-fails",
        ref_app("request_timeout = 0\nstartup_timeout = 3000000000\nmin_concurrency = -1\nmax_multiplexing = 0\n"),
        "ok",
    ),
    Case("request-start-timeout-zero", ref_app("request_start_timeout = 0\n"), "ok"),
    Case(
        "build-args-non-string-accepted",
        direct("", "build_args = { N = 2 }\n"),
        "ok",
        files=DF,
    ),
    Case(
        "other-app-broken",
        fal_toml(APP + 'ref = "app.py"\n[tool.fal.apps.broken]\nkeep_alive = "x"\nref = "b.py"\n'),
        "ok",
    ),
    Case(
        "broken-app-asked",
        fal_toml(APP + 'ref = "app.py"\n[tool.fal.apps.broken]\nkeep_alive = "x"\nref = "b.py"\n'),
        "error",
        app="broken",
    ),
]


def _write(root: Path, case: Case) -> Path:
    for d in case.dirs:
        (root / d).mkdir(parents=True, exist_ok=True)
    for rel, content in case.files.items():
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
    toml = case.toml
    if case.id == "direct-server-absolute-dockerfile":
        toml = fal_toml(APP + f'exposed_port = 8080\nimage = {{ dockerfile = "{root / "Dockerfile"}" }}\n')
    if toml is not None:
        (root / "pyproject.toml").write_text(toml)
    cwd = root / case.cwd
    cwd.mkdir(parents=True, exist_ok=True)
    return cwd


@dataclass
class Outcome:
    value: Any = None
    error: BaseException | None = None


def run_fal(app: str) -> Outcome:
    import fal.project
    from fal.cli._utils import get_app_data_from_toml

    # The fal CLI is a fresh process per command; its discovery caches must not leak between cases.
    fal.project.find_project_root.cache_clear()
    fal.project._load_toml.cache_clear()
    fal.project._cached_resolve.cache_clear()
    try:
        return Outcome(value=get_app_data_from_toml(app, emit_deprecation_warnings=False))
    except Exception as exc:
        return Outcome(error=exc)


def run_falemu(app: str, cwd: Path) -> Outcome:
    try:
        return Outcome(value=get_app(load_project(discover_from=cwd), app))
    except ConfigError as exc:
        return Outcome(error=exc)


@pytest.fixture
def in_case(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[Case], Path]:
    """Writes a case under tmp_path and enters its working folder, as a user running `fal deploy` would."""

    def setup(case: Case) -> Path:
        cwd = _write(tmp_path, case)
        monkeypatch.chdir(cwd)
        return cwd

    return setup


def test_enough_cases() -> None:
    assert len(CASES) >= 45
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_same_outcome_as_fal(case: Case, in_case: Callable[[Case], Path]) -> None:
    cwd = in_case(case)
    fal_out = run_fal(case.app)
    ours = run_falemu(case.app, cwd)

    fal_kind = "ok" if fal_out.error is None else ("syntax" if _is_toml_error(fal_out.error) else "error")
    assert fal_kind == case.expect, f"fal itself gave {fal_kind}: {fal_out.error!r} (the case is mislabelled)"

    if fal_out.error is not None:
        assert ours.error is not None, f"fal rejects with {fal_out.error!r}; falemu accepted"
        assert isinstance(ours.error, ConfigError)
        if case.expect == "syntax":
            err: Any = fal_out.error
            assert f"line {err.lineno}, column {err.colno}" in ours.error.message
            assert "pyproject.toml" in ours.error.message
        else:
            assert ours.error.message == str(fal_out.error)
        return

    assert ours.error is None, f"fal accepts; falemu rejected with {ours.error!r}"
    assert isinstance(ours.value, AppConfig)
    compare_accepted(fal_out.value, ours.value)


def _is_toml_error(exc: BaseException) -> bool:
    import tomli

    return isinstance(exc, tomli.TOMLDecodeError)


def compare_accepted(fal_app: Any, app: AppConfig) -> None:
    """The values falemu resolved are the ones fal's AppData carries (or fal's defaults for them)."""
    import fal
    from fal.cli.deploy_check import SERVER_DEFAULT_SCALE_VALUES as SERVER
    from fal.sdk import FAL_SERVERLESS_DEFAULT_KEEP_ALIVE

    host = fal_app.options.host
    gateway = fal_app.options.gateway
    env = fal_app.options.environment

    assert app.ref == fal_app.ref
    assert app.python_entry_point == fal_app.python_entry_point
    expected_shape = (
        AppShape.ENTRY_POINT
        if fal_app.python_entry_point
        else (AppShape.FAL_APP if fal_app.ref else AppShape.DIRECT_SERVER)
    )
    assert app.shape is expected_shape
    is_class = expected_shape is AppShape.FAL_APP

    # auth: fal sends only the three known modes (`_to_auth_mode_proto`); the rest means unset -> private
    fal_auth = fal_app.auth if fal_app.auth in ("public", "private", "shared") else None
    assert app.auth == fal_auth
    assert app.effective_auth == (fal_auth or "private")
    if fal_app.auth is not None and fal_auth is None:
        assert any("auth" in w for w in app.warnings)
    assert app.alias == (fal_app.name or app.name)
    assert app.team == fal_app.team
    assert app.deployment_strategy == fal_app.deployment_strategy
    assert app.reset_scale == bool(fal_app.reset_scale)

    keep_alive_default = fal.App.host_kwargs["keep_alive"] if is_class else FAL_SERVERLESS_DEFAULT_KEEP_ALIVE
    assert app.scaling.keep_alive == host.get("keep_alive", keep_alive_default)
    machine = host.get("machine_type", fal.App.machine_type if is_class else SERVER["machine_types"][0])
    machine_list = [machine] if isinstance(machine, str) else machine
    if isinstance(machine_list, list) and machine_list and all(isinstance(m, str) for m in machine_list):
        assert list(app.machine_types) == machine_list
    else:
        assert any("machine_type" in w for w in app.warnings)

    for key in (
        "min_concurrency",
        "max_concurrency",
        "max_multiplexing",
        "concurrency_buffer",
        "concurrency_buffer_perc",
        "scaling_delay",
        "request_timeout",
        "request_start_timeout",
        "startup_timeout",
    ):
        fal_value = host.get(key, SERVER[key])
        if key == "request_start_timeout" and fal_value == 0:
            fal_value = None  # fal's deploy check treats 0 as "cleared"
        warned = any(w.startswith(f"{key} = ") for w in app.warnings)
        if fal_value is None or (isinstance(fal_value, int) and not isinstance(fal_value, bool) and not warned):
            assert getattr(app.scaling, key) == fal_value, key
        elif isinstance(fal_value, int) and fal_value < 0:
            assert getattr(app.scaling, key) == 0, key
            assert warned, key
        else:
            assert getattr(app.scaling, key) == SERVER[key], key
            assert any(w.startswith(f"{key} = ") for w in app.warnings), key
    num_gpus = host.get("num_gpus")
    if num_gpus is None or isinstance(num_gpus, int):
        assert app.num_gpus == num_gpus
    else:
        assert app.num_gpus is None
        assert any(w.startswith("num_gpus") for w in app.warnings)

    expected_port = gateway.get("exposed_port", 8080 if expected_shape is not AppShape.DIRECT_SERVER else None)
    assert app.exposed_port == expected_port
    if "metrics_port" in host:
        assert app.metrics_port == host["metrics_port"]
    assert list(app.regions) == host.get("regions", [])
    assert list(app.secrets) == host.get("secrets", [])
    assert (list(app.data_mounts) if app.data_mounts is not None else None) == host.get("data_mounts")
    assert list(app.skip_retry_conditions) == host.get("skip_retry_conditions", [])
    if "retry_config" in host:
        from fal.sdk import validate_retry_config_dict

        assert dict(app.retry_config) == validate_retry_config_dict(host["retry_config"])
    assert app.private_logs == host.get("private_logs")
    assert app.scaling.termination_grace_period_seconds == host.get("termination_grace_period_seconds", 5)
    assert list(app.app_files) == host.get("app_files", [])
    if "app_files_ignore" in host:
        assert list(app.app_files_ignore or ()) == host["app_files_ignore"]
    if "app_files_context_dir" in host:
        assert str(app.app_files_context_dir) == host["app_files_context_dir"]
    if "requirements_context_dir" in host:
        assert str(app.requirements_context_dir) == host["requirements_context_dir"]
    else:
        assert app.requirements_context_dir is None
    requirements = env.get("requirements", [])
    assert [list(r) if isinstance(r, tuple) else r for r in app.requirements] == requirements
    assert app.python_version == env.get("python_version")

    check = host.get("health_check_config")
    if check is None:
        assert app.health_check is None
    else:
        assert app.health_check is not None
        assert app.health_check.path == check.path
        assert app.health_check.start_period_seconds == check.start_period_seconds
        assert app.health_check.timeout_seconds == check.timeout_seconds
        assert app.health_check.failure_threshold == check.failure_threshold
        assert app.health_check.call_regularly == check.call_regularly
        assert app.health_check.method == (check.method.upper() if check.method else None)

    image = env.get("image")
    if image is None:
        assert app.image is None
        assert env.get("kind") is None
        return
    assert env["kind"] == "container"
    assert app.image is not None
    assert app.image.use_isolate == image.get("use_isolate")
    assert app.uses_fal_runtime == (image.get("use_isolate") is not False)
    for key in ("entrypoint", "cmd"):
        written = image.get(key)
        expected = None if written is None else tuple(shlex.split(written) if isinstance(written, str) else written)
        assert getattr(app.image, key) == expected, key
    registries = {h: {"username": r.username, "password": r.password} for h, r in app.image.registries.items()}
    assert registries == (image.get("registries") or {})
    if "dockerfile_str" in image:
        assert app.image.image is None
        assert app.image.dockerfile is not None
        assert app.image.dockerfile.is_absolute()
        assert app.image.dockerfile.read_text() == image["dockerfile_str"]
        assert str(app.image.context_dir) == image["docker_context_dir"]
        assert dict(app.image.build_args) == {k: str(v) for k, v in image["build_args"].items()}
        assert dict(app.image.secrets) == image["secrets"]
    else:
        assert app.image.dockerfile is None
        assert app.image.image == image["image"]
        assert not app.image.build_args


def test_warnings_name_what_fal_does_later(in_case: Callable[[Case], Path]) -> None:
    """The accepted-but-wrong values of fal's parser come back as warnings naming fal's later behaviour."""
    case = next(c for c in CASES if c.id == "unvalidated-types-accepted")
    cwd = in_case(case)
    assert run_fal(case.app).error is None
    app = run_falemu(case.app, cwd).value
    text = "\n".join(app.warnings)
    assert "min_concurrency = 'lots' is not an integer" in text
    assert "machine_types must be a list of strings." in text
    assert "num_gpus = 'x'" in text
    assert re.search(r"max_concurrency = 1\.5", text)
