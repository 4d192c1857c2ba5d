"""Which targets /api/fal/proxy accepts: @fal-ai/server-proxy's default patterns, matched as picomatch does."""

from __future__ import annotations

import pytest

from falemu.jsproxy import glob_to_regex, is_allowed_url


@pytest.mark.parametrize(
    "target",
    [
        "https://fal.run/local/greeter/greet",
        "https://fal.run/local/greeter",
        "https://queue.fal.run/local/greeter/requests/abc/status?logs=1",
        "https://queue.fal.run/local/greeter/requests/abc/status/stream",
        "https://rest.fal.ai/storage/upload/initiate?storage_type=fal-cdn-v3",
        "https://rest.fal.ai/storage/upload/complete-multipart?storage_type=fal-cdn-v3",
    ],
)
def test_fal_targets_are_accepted(target: str) -> None:
    assert is_allowed_url(target)


@pytest.mark.parametrize(
    "target",
    [
        "",
        "not a url",
        "https://example.com/local/greeter",
        "https://fal.run.example.com/x",
        "https://evil.fal.run/x",
        "https://fal.run:8443/local/greeter",
        "https://rest.fal.ai/storage/upload/initiate",
        "https://rest.fal.ai/storage/upload/initiate?storage_type=gcs",
        "https://rest.fal.ai/storage/upload/initiate-multipart?storage_type=fal-cdn-v3",
        "https://rest.fal.ai/storage/auth/token?storage_type=fal-cdn-v3",
        "https://rest.fal.ai/tokens/",
    ],
)
def test_other_targets_are_refused(target: str) -> None:
    assert not is_allowed_url(target)


def test_globs() -> None:
    assert glob_to_regex("a/*/c").fullmatch("a/b/c")
    assert not glob_to_regex("a/*/c").fullmatch("a/b/x/c")
    assert glob_to_regex("a/**").fullmatch("a/b/x/c?q=1")
    assert glob_to_regex("a\\?b").fullmatch("a?b")
    assert not glob_to_regex("a\\?b").fullmatch("axb")
