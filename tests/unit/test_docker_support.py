"""Test clean-up tolerates images that are already gone or in use (a race seen at session teardown)."""

from __future__ import annotations

from typing import Any

import docker
import pytest
from docker_support import remove_images


class _Images:
    def __init__(self, errors: dict[str, Exception]) -> None:
        self.errors = errors
        self.removed: list[str] = []

    def remove(self, image: str, force: bool = False) -> None:
        if image in self.errors:
            raise self.errors[image]
        self.removed.append(image)


class _Client:
    def __init__(self, errors: dict[str, Exception]) -> None:
        self.images = _Images(errors)


def _api_error(status: int) -> docker.errors.APIError:
    response: Any = type("R", (), {"status_code": status, "reason": "x", "url": "u"})()
    return docker.errors.APIError("engine says no", response=response)


def test_gone_and_busy_images_are_skipped_and_the_rest_removed() -> None:
    client = _Client({"gone": docker.errors.ImageNotFound("No such image"), "busy": _api_error(409)})
    remove_images(client, ["a", "gone", "busy", "b"])
    assert client.images.removed == ["a", "b"]


def test_other_engine_errors_still_fail() -> None:
    client = _Client({"bad": _api_error(500)})
    with pytest.raises(docker.errors.APIError):
        remove_images(client, ["bad"])
