"""Every fixture against the real example app on the Docker engine, in pytester subprocesses.

Each inner session writes the ids of the containers it saw to a file; the outer test then checks the
session removed them (or kept them, with --falemu-keep-failed).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "direct-server"

RECORD = '''
import json, os
from pathlib import Path

def record(handle):
    """Append the container ids behind the app's runners to $FALEMU_TEST_RECORD."""
    ids = [getattr(r.handle, "id", None) for r in handle.emulator.runtime.runners()]
    with Path(os.environ["FALEMU_TEST_RECORD"]).open("a") as fh:
        for cid in ids:
            if cid:
                fh.write(cid + "\\n")
'''


@pytest.fixture
def inner(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, base_image: str, tmp_path: Path) -> Path:
    monkeypatch.setenv("FALEMU_BUILD_ARG_BASE_IMAGE", base_image)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    record = tmp_path / "containers.txt"
    record.write_text("")
    monkeypatch.setenv("FALEMU_TEST_RECORD", str(record))
    pytester.makeconftest(RECORD)
    return record


def recorded(path: Path) -> list[str]:
    return sorted({line for line in path.read_text().splitlines() if line})


def exists(docker_client: Any, cid: str) -> bool:
    import docker

    try:
        docker_client.containers.get(cid)
    except docker.errors.NotFound:
        return False
    return True


@pytest.fixture
def cleanup(docker_client: Any) -> Iterator[list[str]]:
    """Containers this test made the inner session keep; removed at the end."""
    ids: list[str] = []
    yield ids
    for cid in ids:
        try:
            docker_client.containers.get(cid).remove(force=True)
        except Exception:
            pass


def test_every_fixture_against_the_example(pytester: pytest.Pytester, inner: Path, docker_client: Any) -> None:
    pytester.makepyfile(
        test_app="""
        import pytest
        import hypothesis
        import schemathesis
        from conftest import record

        def test_session_emulator(falemu):
            assert falemu.emulator.base_url.startswith("http://127.0.0.1:")
            assert falemu.apps == ["greeter"]

        def test_handle(falemu_app):
            assert falemu_app.url.endswith("/local/greeter")
            assert falemu_app.queue_url.endswith("/queue/local/greeter")
            assert falemu_app.run("/greet", {"name": "fal"})["message"] == "Hello, fal."
            assert falemu_app.client.post(falemu_app.url + "/greet", json={"name": "c"}).status_code == 200
            queued = falemu_app.submit("/greet", {"name": "queue"})
            assert queued.result()["message"] == "Hello, queue."
            assert queued.status()["status"] == "COMPLETED"
            assert [r.state for r in falemu_app.runners] == ["IDLE"]
            assert "POST /greet" in falemu_app.logs()
            kinds = {e.kind for e in falemu_app.events}
            assert {"RunnerReady", "RequestCompleted"} <= kinds
            assert "/greet" in falemu_app.openapi["paths"]
            record(falemu_app)

        def test_expire_idle_makes_the_next_call_cold(falemu_app):
            falemu_app.run("/greet", {"name": "warm"})
            before = {r.id for r in falemu_app.runners}
            falemu_app.expire_idle()
            assert falemu_app.live_runners == []
            falemu_app.run("/greet", {"name": "cold"})
            after = {r.id for r in falemu_app.live_runners}
            assert after and not (after & before)
            record(falemu_app)

        @pytest.mark.falemu(min_concurrency=1, keep_alive=1)  # the project's only app
        def test_marker_overrides(falemu_app):
            assert falemu_app.config.scaling.min_concurrency == 1
            assert falemu_app.config.scaling.keep_alive == 1
            assert len(falemu_app.live_runners) == 1  # min_concurrency started one at start-up
            falemu_app.expire_idle()
            assert len(falemu_app.live_runners) == 1  # min_concurrency keeps it
            record(falemu_app)

        def test_real_fal_client(fal_client_emulated):
            import fal_client
            out = fal_client.run("local/greeter/greet", arguments={"name": "client"})
            assert out["message"] == "Hello, client."
            handle = fal_client.submit("local/greeter/greet", arguments={"name": "queued"})
            assert handle.get()["message"] == "Hello, queued."
            record(fal_client_emulated)

        def test_fal_client_is_restored_afterwards():
            import fal_client.client as fc
            assert fc.RUN_URL_FORMAT == "https://fal.run/"

        schema = schemathesis.pytest.from_fixture("falemu_schema")

        @schema.parametrize()
        @hypothesis.settings(max_examples=5, deadline=None)
        def test_contract(case):
            case.call_and_validate()
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", f"--falemu-project={EXAMPLE}", "-q")
    result.assert_outcomes(passed=7)
    seen = recorded(inner)
    assert len(seen) >= 2
    for cid in seen:
        assert not exists(docker_client, cid), f"container {cid[:12]} outlived the session"


def test_keep_failed_keeps_the_failed_tests_containers(
    pytester: pytest.Pytester, inner: Path, docker_client: Any, cleanup: list[str]
) -> None:
    pytester.makepyfile(
        test_app="""
        from conftest import record

        def test_fails(falemu_app):
            falemu_app.run("/greet", {"name": "x"})
            record(falemu_app)
            assert False, "broken on purpose"
        """
    )
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", f"--falemu-project={EXAMPLE}", "--falemu-keep-failed"
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*falemu kept runners*", "kept falemu-greeter-*test_app.py::test_fails*"])
    seen = recorded(inner)
    cleanup.extend(seen)
    assert seen
    assert all(exists(docker_client, cid) for cid in seen)


def test_interrupted_session_still_removes_its_containers(
    pytester: pytest.Pytester, inner: Path, docker_client: Any, cleanup: list[str]
) -> None:
    """Ctrl-C in a test, then Ctrl-C again while the session removes its runners (an impatient user, or
    pytest-xdist stopping a worker), then the process ends without exit handlers (xdist kills a worker
    that is still busy): the containers are gone all the same."""
    pytester.makeconftest(
        RECORD
        + """
import signal, sys
import pytest
from falemu.testing import EmulatorHarness

_stop = EmulatorHarness.stop

def _interrupted_stop(self):
    os.kill(os.getpid(), signal.SIGINT)
    _stop(self)

EmulatorHarness.stop = _interrupted_stop

@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    sys.stdout.flush()
    os._exit(2)
"""
    )
    pytester.makepyfile(
        test_app="""
        from conftest import record

        def test_interrupted(falemu_app):
            falemu_app.run("/greet", {"name": "x"})
            record(falemu_app)
            raise KeyboardInterrupt
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", f"--falemu-project={EXAMPLE}")
    result.stdout.fnmatch_lines(["*KeyboardInterrupt*"])
    seen = recorded(inner)
    cleanup.extend(seen)
    assert seen
    for cid in seen:
        assert not exists(docker_client, cid)


def test_fixtures_call_a_private_app_of_another_owner(pytester: pytest.Pytester, inner: Path, tmp_path: Path) -> None:
    """With `owner = "myteam"` the fixtures' key (the local user's) calls the owner's private app, also when
    that key was first made while the owner was still the default one."""
    import shutil

    from falemu.gateway.keys import KeyStore

    KeyStore(tmp_path / "config" / "falemu").default_key()  # `falemu env` run once with owner `local`

    project = pytester.path / "proj"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache"))
    toml = project / "pyproject.toml"
    text = (
        toml.read_text().replace('auth = "public"', 'auth = "private"').replace('owner = "local"', 'owner = "myteam"')
    )
    assert 'owner = "myteam"' in text
    assert 'auth = "private"' in text
    toml.write_text(text)
    pytester.makepyfile(
        test_app="""
        import httpx
        from conftest import record

        def test_handle(falemu_app):
            assert falemu_app.url.endswith("/myteam/greeter")
            assert falemu_app.run("/greet", {"name": "team"})["message"] == "Hello, team."
            assert falemu_app.submit("/greet", {"name": "queued"}).result()["message"] == "Hello, queued."
            assert falemu_app.client.post(falemu_app.url + "/greet", json={"name": "c"}).status_code == 200
            assert httpx.post(falemu_app.url + "/greet", json={"name": "anon"}).status_code == 401
            record(falemu_app)

        def test_real_fal_client(fal_client_emulated):
            import fal_client
            assert fal_client.run("myteam/greeter/greet", arguments={"name": "fc"})["message"] == "Hello, fc."
            handle = fal_client.submit("myteam/greeter/greet", arguments={"name": "fq"})
            assert handle.get()["message"] == "Hello, fq."
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", f"--falemu-project={project}", "-q")
    result.assert_outcomes(passed=2)


def test_a_server_on_another_port_is_said_on_the_terminal_while_the_test_waits(
    pytester: pytest.Pytester, inner: Path
) -> None:
    """falemu's warnings reach the terminal as they come: the start waits out startup_timeout as fal's
    would, and the session says why long before the test fails (with the same cause in its message)."""
    import shutil

    project = pytester.path / "proj"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache"))
    toml = project / "pyproject.toml"
    toml.write_text(toml.read_text().replace("exposed_port = 8000", "exposed_port = 8001\nstartup_timeout = 8"))
    pytester.makepyfile(
        test_port="""
        def test_waits(falemu_app):
            falemu_app.run("/greet", {"name": "fal"})
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", f"--falemu-project={project}")
    result.assert_outcomes(failed=1)
    live = result.stdout.str().split("= FAILURES =")[0]  # before the failure report and its captured output
    assert "falemu: warning: runner greeter-" in live
    result.stdout.fnmatch_lines(
        [
            "*falemu: warning: runner greeter-*: the server listens on port 8000 inside the container, but "
            "exposed_port is 8001; falemu keeps waiting for port 8001 until startup_timeout (8 s), as fal does",
            "*answered 504: runner greeter-* was not ready within startup_timeout (8 s)*"
            "the server listens on port 8000 inside the container, but exposed_port is 8001",
        ]
    )
