"""A fake ``nvidia-smi`` for tests of GPU hosts (importable as ``fake_gpus``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

NAMES = (
    "GPU 0: NVIDIA A100-SXM4-40GB (UUID: GPU-0b8f1c1e-0000-4000-8000-000000000000)",
    "GPU 1: NVIDIA A100-SXM4-40GB (UUID: GPU-0b8f1c1e-0000-4000-8000-000000000001)",
)


def install_fake_nvidia_smi(folder: Path, monkeypatch: pytest.MonkeyPatch, names: tuple[str, ...] = NAMES) -> Path:
    """Put an ``nvidia-smi`` that lists ``names`` for ``-L`` first on PATH; returns its path."""
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "nvidia-smi"
    listing = "\n".join(f"echo '{name}'" for name in names)
    script.write_text(f'#!/bin/sh\n[ "$1" = "-L" ] || exit 9\n{listing}\n')
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}:{os.environ['PATH']}")
    monkeypatch.delenv("FALEMU_GPU_COUNT", raising=False)
    return script
