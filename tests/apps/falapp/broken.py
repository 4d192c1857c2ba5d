"""fal.Apps whose images cannot be used: falemu must stop with one line and leave nothing behind."""

from __future__ import annotations

import json

import fal
from fal.container import ContainerImage

# A base image whose `python3` reports Python 3.12: fal needs the image's minor version to be the host's.
_REPORT = {
    "executable": "/usr/local/bin/python3",
    "version": "3.12.1",
    "implementation": "cpython",
    "purelib": "/x",
    "libc": "glibc",
    "libc_version": "2.36",
    "machine": "x86_64",
}
_LINE = "FALEMU-PYTHON " + json.dumps(_REPORT).replace('"', '\\\\"')
FAKE_PYTHON = (
    "ARG BASE_IMAGE=python:3.11-slim\nFROM ${BASE_IMAGE}\n"
    f"RUN printf '#!/bin/sh\\necho {_LINE}\\n' > /usr/local/bin/python3 && chmod +x /usr/local/bin/python3\n"
)


class WrongPython(fal.App):
    image = ContainerImage.from_dockerfile_str(FAKE_PYTHON)

    @fal.endpoint("/")
    def root(self) -> dict[str, str]:
        return {}


class BrokenBuild(fal.App):
    image = ContainerImage.from_dockerfile_str(
        "ARG BASE_IMAGE=python:3.11-slim\nFROM ${BASE_IMAGE}\nRUN echo 'no such package: libfalemu-nothing' && exit 7\n"
    )

    @fal.endpoint("/")
    def root(self) -> dict[str, str]:
        return {}
