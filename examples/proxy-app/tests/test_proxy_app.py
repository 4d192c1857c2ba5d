"""The proxy App's own suite, written against falemu's fixtures (nothing here knows about Docker).

`falemu_app` is the App deployed on falemu: fal's own code serves it in a runner, setup() has started
the image server, and /generate uploads its PNG to falemu's local CDN, as fal's CDN would hold it.
"""

from __future__ import annotations

import concurrent.futures
import struct

import httpx
import pytest
import schemathesis
from hypothesis import settings
from server import render, vary

PNG = b"\x89PNG\r\n\x1a\n"


def size_of(png: bytes) -> tuple[int, int]:
    width, height = struct.unpack(">II", png[16:24])  # IHDR
    return width, height


def test_generate_returns_a_png_image_whose_url_serves_the_bytes_the_runner_saved(falemu_app):
    result = falemu_app.run("/generate", {"prompt": "a red fox", "width": 64, "height": 48, "seed": 7})
    assert result["seed"] == 7
    image = result["image"]
    assert image["content_type"] == "image/png"
    downloaded = httpx.get(image["url"], timeout=30)
    assert downloaded.status_code == 200
    assert downloaded.headers["content-type"] == "image/png"
    assert downloaded.content.startswith(PNG)
    assert size_of(downloaded.content) == (64, 48)
    assert downloaded.content == render("a red fox", 64, 48, 7)  # the exact bytes the server drew
    assert image["file_size"] == len(downloaded.content)


def test_setup_started_the_server_before_the_first_request(falemu_app):
    falemu_app.run("/generate", {"prompt": "warm", "width": 16, "height": 16, "seed": 1})
    assert "proxy: image server ready on 127.0.0.1:7860" in falemu_app.logs()


def test_queue(falemu_app):
    request = falemu_app.submit("/generate", {"prompt": "queued", "width": 32, "height": 32, "seed": 3})
    result = request.result()
    assert httpx.get(result["image"]["url"], timeout=30).content == render("queued", 32, 32, 3)


def test_invalid_input_is_rejected_before_the_server_is_called(falemu_app):
    response = falemu_app.client.post(falemu_app.url + "/generate", json={"prompt": "", "width": 8})
    assert response.status_code == 422
    fields = {tuple(error["loc"])[-1] for error in response.json()["detail"]}
    assert fields == {"prompt", "width"}


def test_one_runner_at_most(falemu_app):
    # max_concurrency=1 (a class kwarg): concurrent requests queue for the one runner.
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        results = list(
            pool.map(
                lambda i: falemu_app.run("/generate", {"prompt": f"p{i}", "width": 16, "height": 16, "seed": i}),
                range(3),
            )
        )
    assert [r["seed"] for r in results] == [0, 1, 2]
    assert len(falemu_app.live_runners) <= 1
    started = [e for e in falemu_app.events if e.kind == "RunnerReady"]
    assert len({e.runner for e in started}) == len(started)  # never two at once: each start is a new runner


def test_vary_downloads_an_uploaded_image_and_answers_a_variation_of_the_same_size(fal_client_emulated):
    import fal_client

    source = render("source", 40, 24, 9)
    url = fal_client.upload(source, "image/png")  # into falemu's local CDN, as into fal's
    result = fal_client.run("local/proxy/vary", arguments={"image_url": url, "seed": 4})
    downloaded = httpx.get(result["image"]["url"], timeout=30).content
    assert size_of(downloaded) == (40, 24)
    assert downloaded == vary(source, 4)


def test_vary_says_which_field_is_wrong(falemu_app):
    missing = falemu_app.client.post(falemu_app.url + "/vary", json={"image_url": "http://127.0.0.1:9/none.png"})
    assert missing.status_code == 422
    assert missing.json()["detail"][0]["loc"][-1] == "image_url"


def test_code_that_calls_fal_client(fal_client_emulated):
    import fal_client

    result = fal_client.run(
        "local/proxy/generate", arguments={"prompt": "client", "width": 16, "height": 16, "seed": 5}
    )
    assert httpx.get(result["image"]["url"], timeout=30).content == render("client", 16, 16, 5)


# /vary takes the URL of a real PNG, which generated input cannot be: its own tests above cover it, and
# schemathesis would count the 422 for an unreachable URL as a rejected valid request.
schema = schemathesis.pytest.from_fixture("falemu_schema").exclude(path="/vary")


@schema.parametrize()
@settings(max_examples=10, deadline=None)
def test_contract(case):
    case.call_and_validate()


@pytest.mark.requires_gpu
def test_on_a_gpu_host(falemu_app):
    # machine_type = "GPU-A100": on an engine with GPUs the runner gets one.
    assert falemu_app.run("/generate", {"prompt": "gpu", "width": 16, "height": 16, "seed": 0})["seed"] == 0
