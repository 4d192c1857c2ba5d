"""Loading the plugin must cost almost nothing: it loads in every pytest run of the environment.

Measured as the difference of medians over alternating subprocess runs, so one slow run (other jobs
share the machine) does not decide the result.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

RUNS = 7
BUDGET = 0.030  # seconds over pytest's own import


def _time(code: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - started


def test_plugin_import_costs_under_30ms_over_pytest() -> None:
    baseline: list[float] = []
    with_plugin: list[float] = []
    _time("import pytest")  # warm the file cache
    for _ in range(RUNS):
        baseline.append(_time("import pytest"))
        with_plugin.append(_time("import pytest, falemu_pytest.plugin"))
    extra = statistics.median(with_plugin) - statistics.median(baseline)
    assert extra < BUDGET, f"importing the plugin adds {extra * 1000:.1f} ms (budget {BUDGET * 1000:.0f} ms)"


def test_plugin_imports_only_pytest() -> None:
    code = (
        "import sys, pytest; before = set(sys.modules); import falemu_pytest.plugin; "
        "print(sorted(m for m in set(sys.modules) - before if not m.startswith('falemu_pytest')))"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert out.strip() == "[]"


def test_importtime_of_the_plugin_module() -> None:
    """``python -X importtime``: the plugin module's own cumulative import time stays small."""
    samples = []
    for _ in range(5):
        result = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", "import pytest, falemu_pytest.plugin"],
            check=True,
            capture_output=True,
            text=True,
        )
        line = next(line for line in result.stderr.splitlines() if line.rstrip().endswith(" falemu_pytest.plugin"))
        samples.append(int(line.split("|")[1]) / 1e6)  # cumulative microseconds
    assert statistics.median(samples) < BUDGET
