"""`import falemu` must stay light: the CLI answers fast and the library is safe to import anywhere."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("pytest", "docker", "schemathesis", "httpx", "uvicorn", "fastapi", "starlette", "fal", "fal_client")


def _loaded_after(statement: str) -> set[str]:
    code = f"import sys, json; {statement}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return {name.split(".")[0] for name in json.loads(out)}


@pytest.mark.parametrize(
    "statement",
    [
        "import falemu",
        "import falemu.errors, falemu.events, falemu.clock",
        "import falemu.config",
        "import falemu.config.falapp, falemu.runtime.falapp, falemu.runtime.process, falemu.emulator",
        "from falemu.cli import cli",
    ],
)
def test_light_imports_load_no_heavy_module(statement: str) -> None:
    loaded = _loaded_after(statement)
    assert not loaded & set(HEAVY), f"{statement!r} imported {sorted(loaded & set(HEAVY))}"


def test_help_imports_no_subcommand_module() -> None:
    code = (
        "import sys, json\n"
        "from falemu.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith(('falemu.', 'docker', 'httpx')))))"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    modules = json.loads(out.strip().splitlines()[-1])
    assert "falemu.cli.up" not in modules
    assert not [m for m in modules if m.startswith(("docker", "httpx"))]


def test_only_up_loads_the_early_launch() -> None:
    """The `falemu` entry point loads falemu.prelaunch (json, socket) for `falemu up` alone."""
    code = (
        "import sys, json\n"
        "sys.argv = ['falemu', {args}]\n"
        "from falemu.entry import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print(json.dumps('falemu.prelaunch' in sys.modules))"
    )
    loaded = {}
    for args in ("'--help'", "'ps', '--help'", "'up', '--help'"):
        out = subprocess.run([sys.executable, "-c", code.format(args=args)], check=True, capture_output=True, text=True)
        loaded[args] = json.loads(out.stdout.strip().splitlines()[-1])
    assert loaded == {"'--help'": False, "'ps', '--help'": False, "'up', '--help'": True}
