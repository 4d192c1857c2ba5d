"""The example suite runs offline in falemu's CI: there, the Dockerfile's base image comes from a local one.

On a laptop with a registry in reach nothing needs setting; offline, export
FALEMU_BUILD_ARG_BASE_IMAGE=<a local Python image with fastapi and uvicorn>.
"""

from __future__ import annotations

import os

if "FALEMU_TEST_BASE_IMAGE" in os.environ:
    os.environ.setdefault("FALEMU_BUILD_ARG_BASE_IMAGE", os.environ["FALEMU_TEST_BASE_IMAGE"])
