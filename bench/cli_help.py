"""How long `falemu --help` takes, against a bare Python start-up measured in the same run.

    python bench/cli_help.py [--runs 20]

Prints the median of each and the difference. Target: `falemu --help` answers in under 0.3 s.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time


def _median_seconds(cmd: list[str], runs: int) -> float:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    falemu = shutil.which("falemu")
    help_cmd = [falemu, "--help"] if falemu else [sys.executable, "-m", "falemu", "--help"]
    baseline = _median_seconds([sys.executable, "-c", "pass"], args.runs)
    help_time = _median_seconds(help_cmd, args.runs)
    print(f"python -c pass     median {baseline * 1000:7.1f} ms")
    extra = (help_time - baseline) * 1000
    print(f"falemu --help      median {help_time * 1000:7.1f} ms  (+{extra:.1f} ms over bare Python)")
    verdict = "ok" if help_time < 0.3 else "SLOW"
    print(f"target < 300 ms: {verdict}")
    return 0 if help_time < 0.3 else 1


if __name__ == "__main__":
    raise SystemExit(main())
