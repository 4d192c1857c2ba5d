"""Loading the plugin must cost almost nothing: it loads in every pytest run of the environment.

Measured as the CPU time (user + system) of alternating subprocess runs, comparing the fastest run of
each: other jobs sharing the machine only ever add time, so the minimum is the run with the least
noise, and CPU time does not count the time spent waiting for a core. Bytecode caches are allowed
(in a temporary prefix, so the checkout stays clean), as they are for an installed package.
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

RUNS = 9
BUDGET = 0.030  # seconds over pytest's own import


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    environ["PYTHONPYCACHEPREFIX"] = str(tmp_path / "pycache")
    return environ


def _time(code: str, env: dict[str, str]) -> float:
    """CPU seconds the child process spent."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([sys.executable, "-c", code], check=True, env=env)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def test_plugin_import_costs_under_30ms_over_pytest(env: dict[str, str]) -> None:
    baseline: list[float] = []
    with_plugin: list[float] = []
    _time("import pytest, falemu_pytest.plugin", env)  # write the bytecode caches, warm the file cache
    for _ in range(RUNS):
        baseline.append(_time("import pytest", env))
        with_plugin.append(_time("import pytest, falemu_pytest.plugin", env))
    extra = min(with_plugin) - min(baseline)
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
