"""The examples never rot: their own test suites run here against falemu on the real engine."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.docker
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_pytest_suite_example_passes(base_image: str, tmp_path: Path) -> None:
    env = dict(os.environ)
    env["FALEMU_BUILD_ARG_BASE_IMAGE"] = base_image
    env["XDG_CONFIG_HOME"] = str(tmp_path / "config")
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    env["XDG_RUNTIME_DIR"] = str(tmp_path / "run")
    env.pop("FALEMU_CONFIG_DIR", None)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=EXAMPLES / "pytest-suite",
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    passed = re.search(r"(\d+) passed", out)
    assert passed is not None, out[-2000:]
    assert int(passed.group(1)) >= 8, out[-2000:]
    assert " failed" not in out
    assert " error" not in out


def test_proxy_app_example_passes(base_image: str, tmp_path: Path) -> None:
    """The fal.App example's own suite: fal's code in the runner, its PNG through the local CDN, fal_client."""
    env = dict(os.environ)
    env["FALEMU_BUILD_ARG_BASE_IMAGE"] = base_image
    env["XDG_CONFIG_HOME"] = str(tmp_path / "config")
    env["XDG_RUNTIME_DIR"] = str(tmp_path / "run")
    env["FALEMU_DATA_DIR"] = str(tmp_path / "data")
    env["FALEMU_FILES_DIR"] = str(tmp_path / "files")
    env.pop("FALEMU_CONFIG_DIR", None)  # XDG_CACHE_HOME stays: the wheels falemu downloads are reused
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=EXAMPLES / "proxy-app",
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    passed = re.search(r"(\d+) passed", out)
    assert passed is not None, out[-2000:]
    assert int(passed.group(1)) >= 7, out[-2000:]
    assert " failed" not in out
    assert " error" not in out
