"""FalAppContainer builds the example app with falemu's build and starts it with falemu's readiness."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from falemu.errors import RunnerError

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
TEST_APPS = ROOT / "tests" / "apps"

pytestmark = pytest.mark.docker


@pytest.fixture(autouse=True)
def _offline_base_image(base_image: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FALEMU_BUILD_ARG_BASE_IMAGE", base_image)
    monkeypatch.setenv("TESTCONTAINERS_RYUK_DISABLED", "true")


def test_example_starts_serves_and_stops(docker_client: object) -> None:
    from falemu.testcontainers import FalAppContainer

    container = FalAppContainer("greeter", project=EXAMPLES / "direct-server", startup_timeout=60)
    with container as app:
        url = app.get_url()
        response = httpx.post(f"{url}/greet", json={"name": "fal"}, timeout=10)
        assert response.status_code == 200
        assert response.json()["message"] == "Hello, fal."
        assert response.json()["runner"] == app.runner_id  # FAL_JOB_ID, as a fal runner gets it
        container_id = app.get_container_id()
        labels = app.get_wrapped_container().labels
        assert labels["falemu.app"] == "greeter"
    import docker

    with pytest.raises(docker.errors.NotFound):
        docker_client.containers.get(container_id)  # type: ignore[attr-defined]


def test_loopback_server_fails_with_the_0000_advice() -> None:
    from falemu.testcontainers import FalAppContainer

    container = FalAppContainer("loopback", project=TEST_APPS / "broken-loopback", startup_timeout=60)
    with pytest.raises(RunnerError, match=r"0\.0\.0\.0") as info:
        container.start()
    assert "0.0.0.0" in (info.value.hint or "")
    container.stop()


def test_unknown_app_is_a_config_error(tmp_path: Path) -> None:
    from falemu.errors import ConfigError
    from falemu.testcontainers import FalAppContainer

    with pytest.raises(ConfigError, match=r"App nope not found in pyproject\.toml"):
        FalAppContainer("nope", project=EXAMPLES / "direct-server")
