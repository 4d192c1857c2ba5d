"""Loading the plugin must cost almost nothing: it loads in every pytest run of the environment.

The cost is measured inside a fresh interpreter that has already imported pytest (what every pytest
run pays anyway): the time ``import falemu_pytest.plugin`` then takes, median of several processes.
Comparing two whole interpreter start-ups instead would drown a few milliseconds in the start-up's own
noise (``import pytest`` alone varies by tens of milliseconds here). Bytecode caches are allowed (in a
temporary prefix, so the checkout stays clean), as they are for an installed package.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

RUNS = 7
BUDGET = 0.030  # seconds over pytest's own import

MEASURE = (
    "import time, pytest\n"
    "started = time.perf_counter()\n"
    "import falemu_pytest.plugin\n"
    "print(time.perf_counter() - started)\n"
)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    environ["PYTHONPYCACHEPREFIX"] = str(tmp_path / "pycache")
    return environ


def _plugin_import_seconds(env: dict[str, str]) -> float:
    out = subprocess.run([sys.executable, "-c", MEASURE], check=True, capture_output=True, text=True, env=env)
    return float(out.stdout.strip())


def test_plugin_import_costs_under_30ms_over_pytest(env: dict[str, str]) -> None:
    _plugin_import_seconds(env)  # write the bytecode caches, warm the file cache
    extra = statistics.median(_plugin_import_seconds(env) for _ in range(RUNS))
    assert extra < BUDGET, f"importing the plugin adds {extra * 1000:.1f} ms (budget {BUDGET * 1000:.0f} ms)"


def test_the_measure_sees_a_heavy_import(env: dict[str, str], tmp_path: Path) -> None:
    """The same measure reports a plugin that imports something heavy as over budget."""
    heavy = tmp_path / "heavy_plugin"
    heavy.mkdir()
    (heavy / "falemu_pytest").mkdir()
    (heavy / "falemu_pytest" / "__init__.py").write_text("")
    (heavy / "falemu_pytest" / "plugin.py").write_text("import schemathesis, docker, httpx, fastapi\n")
    env = {**env, "PYTHONPATH": str(heavy)}
    assert _plugin_import_seconds(env) > BUDGET


def test_plugin_imports_only_pytest() -> None:
    code = (
        "import sys, pytest; before = set(sys.modules); import falemu_pytest.plugin; "
        "print(sorted(m for m in set(sys.modules) - before if not m.startswith('falemu_pytest')))"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert out.strip() == "[]"


def test_importtime_of_the_plugin_module(env: dict[str, str]) -> None:
    """``python -X importtime``: the plugin module's own cumulative import time stays small."""
    samples = []
    for _ in range(5):
        result = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", "import pytest, falemu_pytest.plugin"],
            check=True,
            capture_output=True,
            text=True,
            env=env,
        )
        line = next(line for line in result.stderr.splitlines() if line.rstrip().endswith(" falemu_pytest.plugin"))
        samples.append(int(line.split("|")[1]) / 1e6)  # cumulative microseconds
    assert statistics.median(samples) < BUDGET
