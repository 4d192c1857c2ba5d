"""The suite runs offline in falemu's CI: there, the Dockerfile's base image comes from a local one.

On a laptop with a registry in reach nothing needs setting; offline, export
FALEMU_BUILD_ARG_BASE_IMAGE=<a local Python 3.11 image>. falemu downloads fal's wheels on this machine
(pip, first build only), so the image build itself needs no network.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

if "FALEMU_TEST_BASE_IMAGE" in os.environ:
    os.environ.setdefault("FALEMU_BUILD_ARG_BASE_IMAGE", os.environ["FALEMU_TEST_BASE_IMAGE"])

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # server.py, to draw the expected PNG here
