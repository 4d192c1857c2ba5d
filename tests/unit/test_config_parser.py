"""falemu's own behaviour around fal's parser: defaults by shape, warnings, hints, TOML errors, laziness.

Word-for-word parity with fal is in tests/parity; these tests pin what fal has no opinion on.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from falemu.config import (
    AppShape,
    find_project_root,
    find_pyproject,
    get_app,
    load_project,
)
from falemu.config.report import app_report
from falemu.errors import ConfigError


def write(root: Path, body: str, **files: str) -> Path:
    (root / "pyproject.toml").write_text(body)
    for name, content in files.items():
        (root / name).write_text(content)
    return root


def app_of(root: Path, body: str, name: str = "a", **files: str):  # type: ignore[no-untyped-def]
    write(root, body, **files)
    return get_app(load_project(root), name)


def error_of(root: Path, body: str, name: str = "a", **files: str) -> ConfigError:
    write(root, body, **files)
    with pytest.raises(ConfigError) as info:
        get_app(load_project(root), name)
    return info.value


DOCKERFILE = {"Dockerfile": "FROM scratch\n"}


# --- defaults by shape -------------------------------------------------------------------------------


def test_direct_server_defaults(tmp_path: Path) -> None:
    app = app_of(
        tmp_path,
        '[tool.fal.apps.a]\nexposed_port = 8000\nhealth_check = { path = "/h" }\n'
        'image = { dockerfile = "Dockerfile" }\n',
        **DOCKERFILE,
    )
    assert app.shape is AppShape.DIRECT_SERVER
    assert (app.scaling.keep_alive, app.machine_types, app.exposed_port, app.metrics_port) == (10, ("XS",), 8000, None)
    assert app.health_check is not None
    assert app.health_check.method == "GET"
    assert app.image is not None
    assert app.image.use_isolate is False
    assert not app.uses_fal_runtime
    assert app.image.dockerfile == (tmp_path / "Dockerfile").resolve()
    assert app.image.context_dir == tmp_path.resolve()
    assert app.effective_auth == "private"
    assert app.auth is None
    assert app.scaling.max_concurrency == 2
    assert app.scaling.request_timeout == 3600
    assert app.scaling.startup_timeout == 600
    assert app.scaling.termination_grace_period_seconds == 5
    assert app.warnings == ()


def test_fal_app_defaults_are_the_app_class_defaults(tmp_path: Path) -> None:
    app = app_of(tmp_path, '[tool.fal.apps.a]\nref = "app.py::MyApp"\n', **{"app.py": ""})
    assert app.shape is AppShape.FAL_APP
    assert app.ref == f"{tmp_path.resolve()}/app.py::MyApp"
    assert (app.scaling.keep_alive, app.machine_types, app.exposed_port, app.metrics_port) == (60, ("S",), 8080, 9090)
    assert app.sources["keep_alive"] == "default"
    assert app.sources["ref"] == "pyproject"
    assert app.warnings == ()


def test_entry_point_defaults(tmp_path: Path) -> None:
    app = app_of(tmp_path, '[tool.fal.apps.a]\npython_entry_point = "pkg.mod:App"\nkeep_alive = 30\n')
    assert app.shape is AppShape.ENTRY_POINT
    assert (app.scaling.keep_alive, app.machine_types, app.exposed_port) == (30, ("XS",), 8080)
    assert app.sources["keep_alive"] == "pyproject"


def test_name_key_sets_the_alias(tmp_path: Path) -> None:
    app = app_of(tmp_path, '[tool.fal.apps.a]\npython_entry_point = "m:A"\nname = "my-alias"\n')
    assert (app.name, app.alias) == ("a", "my-alias")


def test_string_cmd_and_entrypoint_are_shell_split(tmp_path: Path) -> None:
    app = app_of(
        tmp_path,
        '[tool.fal.apps.a]\nexposed_port = 1\n[tool.fal.apps.a.image]\nimage = "x:1"\n'
        'entrypoint = "/bin/sh -c"\ncmd = "python -m \'my app\'"\n',
    )
    assert app.image is not None
    assert app.image.entrypoint == ("/bin/sh", "-c")
    assert app.image.cmd == ("python", "-m", "my app")


def test_list_cmd_is_kept_as_written(tmp_path: Path) -> None:
    app = app_of(tmp_path, '[tool.fal.apps.a]\nexposed_port = 1\nimage = { image = "x", cmd = ["a b", "c"] }\n')
    assert app.image is not None
    assert app.image.cmd == ("a b", "c")


# --- warnings: what fal accepts now and rejects or ignores later ------------------------------------


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        ('auth = "bogus"', "fal silently treats it as unset and `fal deploy` makes the app private"),
        ("auth = 1", "auth = 1 is not one of public, private, shared"),
        ('deployment_strategy = "blue"', "deployment_strategy = 'blue' is not rolling or recreate"),
        ('machine_type = "GPU-Z9"', "machine_type 'GPU-Z9' is not a machine type fal documents"),
        ("machine_type = []", "No machine type provided."),
        ('min_concurrency = "2"', "min_concurrency = '2' is not an integer"),
        ("min_concurrency = 3\nmax_concurrency = 1", "min_concurrency (3) is above max_concurrency (1)"),
        ("num_gpus = -1", "num_gpus = -1 is negative"),
        ('health_check = { path = "/h", method = 5 }', "health_check.method = 5 is not a string"),
        ('health_check = { path = "/h", method = "FETCH" }', "not an HTTP method"),
        ('python_entry_point = "nocolon"', "python_entry_point must be in '<module>:<symbol>' format."),
        ("no_scale = true", "no_scale is deprecated, use app_scale_settings instead"),
        ('app_scale_settings = "yes"', "app_scale_settings = 'yes' is not a boolean"),
        ("exposed_port = 9000", "the fal.App server in the runner binds 8080"),
        ("team = 5", "team = 5 is not a string"),
        ("keep_alive = 1000000000000000000", "keep_alive = 1000000000000000000 does not fit the int32"),
        ("termination_grace_period_seconds = 4294967296", "does not fit the int32 fal sends it as"),
        ('name = "ünï"', "app name 'ünï' is not only ASCII letters"),
        (f'name = "{"n" * 300}"', "is 300 characters long: falemu shortens it"),
    ],
)
def test_warnings(tmp_path: Path, extra: str, fragment: str) -> None:
    body = '[tool.fal.apps.a]\nref = "app.py::A"\n' + extra + "\n"
    if "python_entry_point" in extra:
        body = "[tool.fal.apps.a]\n" + extra + "\n"
    app = app_of(tmp_path, body, **{"app.py": ""})
    assert any(fragment in w for w in app.warnings), app.warnings


def test_bad_values_fall_back_to_defaults(tmp_path: Path) -> None:
    app = app_of(
        tmp_path,
        '[tool.fal.apps.a]\nref = "app.py"\nmin_concurrency = "x"\nmachine_type = 5\nauth = "nope"\n',
        **{"app.py": ""},
    )
    assert (app.scaling.min_concurrency, app.machine_types, app.auth) == (0, ("S",), None)


def test_direct_server_without_port_warns(tmp_path: Path) -> None:
    app = app_of(tmp_path, '[tool.fal.apps.a]\nimage = { image = "x:1" }\n')
    assert app.exposed_port is None
    assert any("no exposed_port" in w for w in app.warnings)


def test_out_of_range_keep_alive_falls_back_to_the_default(tmp_path: Path) -> None:
    app = app_of(tmp_path, '[tool.fal.apps.a]\nref = "app.py::A"\nkeep_alive = 1000000000000000000\n', **{"app.py": ""})
    assert app.scaling.keep_alive == 60  # the fal.App default, as for other out-of-range integers


def test_exposed_port_zero_on_a_direct_server_warns(tmp_path: Path) -> None:
    app = app_of(tmp_path, '[tool.fal.apps.a]\nexposed_port = 0\nimage = { image = "x:1" }\n')
    assert any("exposed_port = 0" in w and "falemu uses 8080" in w for w in app.warnings), app.warnings


@pytest.mark.parametrize("name", ["a/b", "a b", "a?b", "a#b", "a%2Fb", "..", "tab\there"])
def test_an_app_name_that_is_not_one_url_segment_is_a_config_error(tmp_path: Path, name: str) -> None:
    for body in (f'[tool.fal.apps.a]\nname = "{name}"\n', f'[tool.fal.apps."{name}"]\nexposed_port = 8000\n'):
        app = "a" if body.startswith("[tool.fal.apps.a]") else name
        error = error_of(tmp_path, body + 'image = { image = "x:1" }\n', name=app)
        assert (
            error.message == f"app name {name!r} cannot be served at /{{owner}}/{{app}}: it is not one URL path segment"
        )
        assert "kebab-case" in (error.hint or "")
        assert error.exit_code == 2


def test_missing_ref_file_warns(tmp_path: Path) -> None:
    app = app_of(tmp_path, '[tool.fal.apps.a]\nref = "nope.py::A"\n')
    assert any("nope.py does not exist" in w for w in app.warnings)


def test_unsplittable_cmd_warns_and_runs_as_one_word(tmp_path: Path) -> None:
    app = app_of(tmp_path, '[tool.fal.apps.a]\nexposed_port = 1\nimage = { image = "x", cmd = "echo \'oops" }\n')
    assert app.image is not None
    assert app.image.cmd == ("echo 'oops",)
    assert any("cannot be split" in w for w in app.warnings)


# --- hints after fal's message ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message", "hint"),
    [
        (
            '[tool.fal.apps.a]\nref = "a.py"\nkeep_alvie = 300\n',
            "Found unexpected keys in pyproject.toml: {'keep_alvie': 300}",
            "did you mean `keep_alive`?",
        ),
        (
            '[tool.fal.apps.a]\nref = "a.py"\nmin-concurrency = 1\n',
            "Found unexpected keys in pyproject.toml: {'min-concurrency': 1}",
            "did you mean `min_concurrency`? (fal does not turn '-' into '_' inside app tables)",
        ),
        (
            '[tool.fal.apps.a]\nref = "a.py"\nexposed_prot = 1\nreqirements = []\n',
            "Found unexpected keys in pyproject.toml: {'exposed_prot': 1, 'reqirements': []}",
            "`exposed_prot`: did you mean `exposed_port`?; `reqirements`: did you mean `requirements`?",
        ),
        (
            '[tool.fal.apps.a]\nref = "a.py"\nresolver = "uv"\n',
            "Found unexpected keys in pyproject.toml: {'resolver': 'uv'}",
            "`resolver` is a fal.App/fal.function option that pyproject.toml does not accept",
        ),
        (
            '[tool.fal.apps.a]\nref = "a.py"\nhealth_check = { path = "/h", methd = "GET" }\n',
            "Found unexpected keys in app a health_check: {'methd': 'GET'}",
            "did you mean `method`?",
        ),
        (
            '[tool.fal.apps.a]\nimage = { image = "x", builder = "depot" }\n',
            "Found unexpected keys in app a image: {'builder': 'depot'}",
            "`builder` is a fal.ContainerImage option that the pyproject image table does not accept",
        ),
        (
            '[tool.fal.apps.a]\nimage = { image = "x", dockerfil = "D" }\n',
            "Found unexpected keys in app a image: {'dockerfil': 'D'}",
            "did you mean `dockerfile`?",
        ),
        (
            '[tool.fal.apps.a]\nref = "a.py"\nno_scale = true\napp_scale_settings = true\n',
            "Found unexpected keys in pyproject.toml: {'app_scale_settings': True}",
            "fal reads app_scale_settings only without no_scale; remove the deprecated no_scale",
        ),
    ],
)
def test_hint_follows_fal_message(tmp_path: Path, body: str, message: str, hint: str) -> None:
    error = error_of(tmp_path, body)
    assert error.message == message
    assert error.hint == hint
    assert error.exit_code == 2


def test_unknown_key_without_a_close_match_lists_the_known_keys(tmp_path: Path) -> None:
    error = error_of(tmp_path, '[tool.fal.apps.a]\nref = "a.py"\nzzz = 1\n')
    assert error.hint is not None
    assert error.hint.startswith("remove `zzz`; app keys fal accepts: ")
    assert "keep_alive" in error.hint


def test_every_error_has_a_hint(tmp_path: Path) -> None:
    for body in (
        '[tool.fal.apps.a]\nkeep_alive = "x"\nref = "a.py"\n',
        '[tool.fal.apps.a]\nregions = ["mars"]\nref = "a.py"\n',
        '[tool.fal.apps.a]\nimage = { image = "x", build_args = {} }\n',
        "[tool.fal.apps.a]\nkeep_alive = 3\n",
    ):
        assert error_of(tmp_path, body).hint


# --- TOML syntax errors -----------------------------------------------------------------------------


def test_toml_error_names_file_line_and_column(tmp_path: Path) -> None:
    error = error_of(tmp_path, '[tool.fal.apps.a]\nref = "a.py"\nkeep_alive = = 3\n')
    assert (
        error.message == f"Invalid TOML in {tmp_path.resolve() / 'pyproject.toml'} at line 3, column 14: Invalid value"
    )
    assert error.hint is not None
    assert "TOML" in error.hint


def test_toml_error_in_a_pyproject_passed_during_discovery(tmp_path: Path) -> None:
    write(tmp_path, '[tool.fal.apps.a]\nref = "a.py"\n')
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "pyproject.toml").write_text("[project\n")
    with pytest.raises(ConfigError, match=r"sub/pyproject.toml at line 1, column 9"):
        load_project(discover_from=tmp_path / "sub")


def test_toml_1_1_syntax_is_accepted_like_fal(tmp_path: Path) -> None:
    app = app_of(tmp_path, '[tool.fal.apps.a]\npython_entry_point = "m:A"\nhealth_check = {\n  path = "/h",\n}\n')
    assert app.health_check is not None
    assert app.health_check.path == "/h"


def test_not_utf8(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_bytes(b"[tool.fal.apps.a]\nref = '\xff'\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_project(tmp_path / "pyproject.toml")


# --- discovery and the project API ------------------------------------------------------------------


def test_discovery_api(tmp_path: Path) -> None:
    write(tmp_path, '[tool.fal.apps.a]\nref = "a.py"\n')
    deep = tmp_path / "x" / "y"
    deep.mkdir(parents=True)
    assert find_project_root(deep) == tmp_path.resolve()
    assert find_pyproject(deep) == tmp_path.resolve() / "pyproject.toml"
    (tmp_path / "x" / ".git").mkdir()
    assert find_project_root(deep) == (tmp_path / "x").resolve()
    assert find_pyproject(deep) is None
    with pytest.raises(ConfigError, match=r"^No pyproject.toml file found\.$") as info:
        load_project(discover_from=deep)
    assert info.value.hint is not None
    assert ".git" in info.value.hint


def test_load_project_from_a_file_and_from_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, '[tool.fal.apps.a]\nref = "a.py"\n')
    assert load_project(tmp_path / "pyproject.toml").root == tmp_path.resolve()
    monkeypatch.chdir(tmp_path)
    assert load_project().pyproject == tmp_path.resolve() / "pyproject.toml"
    with pytest.raises(ConfigError, match="No such project folder"):
        load_project(tmp_path / "missing")


def test_apps_parse_on_their_own(tmp_path: Path) -> None:
    write(
        tmp_path,
        '[tool.fal.apps.good]\npython_entry_point = "m:A"\n'
        '[tool.fal.apps.bad]\npython_entry_point = "m:B"\nkeep_alive = "x"\n'
        '[tool.fal.apps.worse]\nregions = ["mars"]\nref = "c.py"\n',
    )
    project = load_project(tmp_path)
    assert project.app_names == ("good", "bad", "worse")
    assert "bad" in project.apps
    assert len(project.apps) == 3
    assert project.app("good").python_entry_point == "m:A"
    for _ in range(2):  # the failure is remembered, and raised again each time
        with pytest.raises(ConfigError, match=r"^keep_alive must be an integer\.$"):
            project.app("bad")
    with pytest.raises(ConfigError, match=r"^Invalid regions: mars"):
        project.apps["worse"]
    with pytest.raises(ConfigError, match=r"^App nope not found in pyproject.toml$") as info:
        project.app("nope")
    assert info.value.hint is not None
    assert "good, bad, worse" in info.value.hint


def test_report_is_json_and_masks_build_secrets(tmp_path: Path) -> None:
    app = app_of(
        tmp_path,
        '[tool.fal.apps.a]\nexposed_port = 8000\n[tool.fal.apps.a.image]\ndockerfile = "Dockerfile"\n'
        'secrets = { TOKEN = "s3cret" }\nregistries = { "r.io" = { username = "u", password = "plain" }, '
        '"q.io" = { username = "v", password = "$REF" } }\n',
        **DOCKERFILE,
    )
    report = app_report(app)
    text = json.dumps(report)
    assert "s3cret" not in text
    assert "plain" not in text
    assert "$REF" in text
    values = report["values"]
    assert values["exposed_port"] == {"value": 8000, "source": "pyproject"}
    assert values["keep_alive"] == {"value": 10, "source": "default"}
    assert values["image.use_isolate"] == {"value": False, "source": "derived"}
    assert values["shape"]["value"] == "direct-server"


def test_importing_falemu_config_loads_no_heavy_modules() -> None:
    code = (
        "import sys, falemu.config, falemu.config.report, falemu.cli.config_cmd\n"
        "bad = [m for m in ('fal', 'pytest', 'docker', 'schemathesis') if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
