"""Docker clean-up helpers shared by test modules (importable as ``docker_support``).

Several tests and session fixtures remove the images they built. Two of them may reach the same
image (one image id under several tags, or a fixture's teardown after a test already removed it), and
the engine may still hold an image for a container being removed: clean-up must tolerate both, or a
test that passed ends the session with an error.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def remove_images(client: Any, images: Iterable[str]) -> None:
    """Remove each image (id or tag), ignoring images that are already gone or still in use."""
    import docker

    for image in images:
        try:
            client.images.remove(image, force=True)
        except docker.errors.NotFound:
            pass  # removed meanwhile, under another tag or by another clean-up
        except docker.errors.APIError as exc:
            if getattr(exc, "status_code", None) != 409:  # 409: in use or being removed right now
                raise


def remove_app_images(client: Any, *aliases: str) -> None:
    """Remove every image labelled as built for one of ``aliases`` (``falemu.app=<alias>``)."""
    for alias in aliases:
        # The engine's listing: images.list() would inspect each image again, and fail on one removed meanwhile.
        listed = client.api.images(filters={"label": f"falemu.app={alias}"})
        remove_images(client, [str(image["Id"]) for image in listed])
