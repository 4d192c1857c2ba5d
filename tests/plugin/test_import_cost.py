"""Loading the plugin must cost almost nothing: it loads in every pytest run of the environment.

Measured as the difference of medians over alternating subprocess runs, so one slow run (other jobs
share the machine) does not decide the result. Bytecode caches are allowed (in a temporary prefix, so
the checkout stays clean), as they are for an installed package.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

RUNS = 7
BUDGET = 0.030  # seconds over pytest's own import


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    environ["PYTHONPYCACHEPREFIX"] = str(tmp_path / "pycache")
    return environ


def _time(code: str, env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, env=env)
    return time.perf_counter() - started


def test_plugin_import_costs_under_30ms_over_pytest(env: dict[str, str]) -> None:
    baseline: list[float] = []
    with_plugin: list[float] = []
    _time("import pytest, falemu_pytest.plugin", env)  # write the bytecode caches, warm the file cache
    for _ in range(RUNS):
        baseline.append(_time("import pytest", env))
        with_plugin.append(_time("import pytest, falemu_pytest.plugin", env))
    extra = statistics.median(with_plugin) - statistics.median(baseline)
    assert extra < BUDGET, f"importing the plugin adds {extra * 1000:.1f} ms (budget {BUDGET * 1000:.0f} ms)"


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
