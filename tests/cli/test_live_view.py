"""What a user reads in ``falemu up``'s live view, ``falemu env`` and ``falemu config show`` (no Docker needed)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from falemu.cli import cli
from falemu.cli.env import env_warnings
from falemu.cli.output import Renderer
from falemu.cli.up import ready_text
from falemu.events import (
    BuildStep,
    Notice,
    RequestCompleted,
    RequestStarted,
    RunnerFailed,
    RunnerReady,
    RunnerStateChanged,
    RunnerStopped,
    ScaledDown,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "direct-server"


def renderer(**kwargs: bool) -> tuple[Renderer, io.StringIO]:
    out = io.StringIO()
    return Renderer(stream=out, color=False, **kwargs), out


def test_falemu_own_label_steps_are_not_shown_as_build_steps() -> None:
    r, out = renderer()
    r(BuildStep("greeter", step=6, steps=9, text='CMD ["python3", "server.py"]'))
    r(BuildStep("greeter", step=7, steps=9, text="LABEL falemu.app=greeter"))
    r(BuildStep("greeter", step=8, steps=9, text="LABEL falemu.image-hash=0123"))
    assert out.getvalue().splitlines() == ['greeter: step 6/9 CMD ["python3", "server.py"]']
    rv, outv = renderer(verbose=True)
    rv(BuildStep("greeter", step=7, steps=9, text="LABEL falemu.app=greeter"))
    assert "LABEL falemu.app" in outv.getvalue()


def test_per_request_state_flips_are_left_to_the_request_lines() -> None:
    r, out = renderer()
    for state in ("PENDING", "SETUP", "IDLE"):
        r(RunnerStateChanged("greeter", runner="g-1", state=state))
    r(RunnerStateChanged("greeter", runner="g-1", state="RUNNING"))
    r(RequestStarted("greeter", request_id="a", runner="g-1"))
    r(RunnerStateChanged("greeter", runner="g-1", state="IDLE"))
    r(RequestCompleted("greeter", request_id="a", runner="g-1", status_code=200, seconds=0.01))
    r(RunnerStateChanged("greeter", runner="g-1", state="TERMINATING"))
    assert out.getvalue().splitlines() == [
        "[g-1] PENDING",
        "[g-1] SETUP",
        "[g-1] IDLE",
        "greeter: request a -> g-1 200 in 10 ms (0 in flight)",  # a quick request: one line, at its end
        "[g-1] TERMINATING",
    ]
    rv, outv = renderer(verbose=True)
    for state in ("IDLE", "RUNNING", "IDLE"):
        rv(RunnerStateChanged("greeter", runner="g-1", state=state))
    assert outv.getvalue().splitlines() == ["[g-1] IDLE", "[g-1] RUNNING", "[g-1] IDLE"]


def test_a_long_request_is_shown_when_it_has_run_a_while_and_again_when_it_ends() -> None:
    import time

    r, out = renderer()
    r(RequestStarted("greeter", request_id="slow", runner="g-1"))
    r(RequestStarted("greeter", request_id="quick", runner="g-2"))
    assert out.getvalue() == ""
    r(RequestCompleted("greeter", request_id="quick", runner="g-2", status_code=200, seconds=0.003))
    r.show_long_requests(now=time.monotonic() + 2 * r.start_line_delay)
    r(RequestCompleted("greeter", request_id="slow", runner="g-1", status_code=500, seconds=2.5))
    assert out.getvalue().splitlines() == [
        "greeter: request quick -> g-2 200 in 3 ms (1 in flight)",
        "greeter: request slow -> g-1 (1 in flight)",
        "greeter: request slow 500 in 2.5 s (0 in flight)",
    ]


def test_the_output_thread_shows_a_long_request_on_its_own() -> None:
    import time

    out = io.StringIO()
    r = Renderer(stream=out, color=False, start_line_delay=0.05)
    r(RequestStarted("greeter", request_id="slow", runner="g-1"))
    deadline = time.monotonic() + 15  # a guard against a hang, not a timing assertion
    while "request slow -> g-1 (1 in flight)" not in out.getvalue() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert out.getvalue().splitlines() == ["greeter: request slow -> g-1 (1 in flight)"]


BUSY_SUMMARY = "greeter: 30 more requests in the last second (28 × 200, 2 × 503), 0 in flight"


def _busy_second(r: Renderer) -> None:
    """50 quick requests to one app within a second, two of them answered 503."""
    for i in range(50):
        r(RequestStarted("greeter", request_id=f"r{i}", runner="g-1"))
        status = 503 if i in (30, 40) else 200
        r(RequestCompleted("greeter", request_id=f"r{i}", runner="g-1", status_code=status, seconds=0.002))


def test_a_busy_app_gets_its_first_request_lines_then_a_summary_per_second() -> None:
    import time

    from falemu.cli.output import REQUEST_LINES_PER_SECOND

    r, out = renderer()
    _busy_second(r)
    lines = out.getvalue().splitlines()
    assert len(lines) == REQUEST_LINES_PER_SECOND
    assert lines[-1] == f"greeter: request r{REQUEST_LINES_PER_SECOND - 1} -> g-1 200 in 2 ms (0 in flight)"
    r.show_summaries(now=time.monotonic() + 2)
    assert out.getvalue().splitlines()[REQUEST_LINES_PER_SECOND:] == [BUSY_SUMMARY]
    r.show_summaries(now=time.monotonic() + 4)  # a quiet second: nothing to say
    assert len(out.getvalue().splitlines()) == REQUEST_LINES_PER_SECOND + 1
    rv, outv = renderer(verbose=True)
    _busy_second(rv)
    rv.show_summaries(now=time.monotonic() + 2)
    ends = [line for line in outv.getvalue().splitlines() if " 200 in " in line or " 503 in " in line]
    assert len(ends) == 50  # --verbose: every request's lines, no summary
    assert "more requests" not in outv.getvalue()


def test_the_output_thread_prints_the_summary_when_the_second_is_over() -> None:
    import time

    r, out = renderer()
    _busy_second(r)
    deadline = time.monotonic() + 15  # a guard against a hang, not a timing assertion
    while "more requests" not in out.getvalue() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert out.getvalue().splitlines()[-1] == BUSY_SUMMARY


def test_verbose_shows_every_request_start_at_once() -> None:
    r, out = renderer(verbose=True)
    r(RequestStarted("greeter", request_id="a", runner="g-1"))
    assert out.getvalue().splitlines() == ["greeter: request a -> g-1 (1 in flight)"]


def test_after_ctrl_c_a_start_that_ends_reads_as_cancelled_not_failed() -> None:
    r, out = renderer()
    r(RunnerStateChanged("greeter", runner="g-1", state="SETUP"))
    r.stopping()
    r.stopping()  # the signal handler and the cleanup both call it: said once
    r(RunnerStateChanged("greeter", runner="g-1", state="FAILURE_DELAY"))
    r(RunnerFailed("greeter", runner="g-1", error_type="runner_scheduling_failure", message="exited with code 137"))
    assert out.getvalue().splitlines() == [
        "[g-1] SETUP",
        "stopping...",
        "[g-1] start cancelled: falemu up is stopping",
    ]


def test_ready_line_says_why_the_runner_started_and_how_long_it_took() -> None:
    r, out = renderer()
    timeline = {"build": 0.0, "create": 0.5, "start": 1.0, "port_open": 1.0, "http_ready": 0.0}
    r(RunnerReady("greeter", runner="g-1", address="http://127.0.0.1:4000", timeline=timeline, cold_start=False))
    assert out.getvalue().strip() == (
        "[g-1] ready at http://127.0.0.1:4000 in 2.5 s "
        "(started ahead of requests: create 500 ms, start 1.0 s, port open 1.0 s, http ready 0 ms)"
    )


@pytest.mark.parametrize(
    ("reason", "text"),
    [
        ("never_served", "no request came since it started, and min_concurrency is 0 (never_served)"),
        ("shutdown", "falemu up is stopping (shutdown)"),
        ("something_new", "something_new"),
    ],
)
def test_stop_reasons_are_explained(reason: str, text: str) -> None:
    r, out = renderer()
    r(RunnerStopped("greeter", runner="g-1", reason=reason))
    r(ScaledDown("greeter", runners=0, target=0, reason=reason))
    assert out.getvalue().splitlines() == [
        f"[g-1] stopped: {text}",
        f"greeter: scaling down, 0 runner(s) left: {text}",
    ]


def test_warnings_name_their_app_unless_the_message_does() -> None:
    r, out = renderer()
    r(Notice("greeter", level="warning", message="the Docker engine cannot give GPUs"))
    r(Notice("greeter", level="warning", message="greeter: the process runtime runs one runner at a time"))
    r(Notice("falemu", level="warning", message="no Docker engine answers"))
    assert out.getvalue().splitlines() == [
        "warning: greeter: the Docker engine cannot give GPUs",
        "warning: greeter: the process runtime runs one runner at a time",
        "warning: no Docker engine answers",
    ]


def test_serving_block_shows_the_app_id_fal_client_takes() -> None:
    r, out = renderer()
    args = {
        "app": "greeter",
        "url": "https://127.0.0.1:8787/local/greeter",
        "queue_url": "https://127.0.0.1:8787/queue/local/greeter",
        "auth": "public",
        "endpoints": ["/greet"],
        "runners": [],
    }
    r.serving(**args)  # type: ignore[arg-type]
    assert out.getvalue().splitlines()[1:3] == [
        "  App id local/greeter",
        "  Sync   https://127.0.0.1:8787/local/greeter",
    ]
    rj, outj = renderer(json_lines=True)
    rj.serving(**args)  # type: ignore[arg-type]
    assert json.loads(outj.getvalue())["app_id"] == "local/greeter"


def test_ready_text_tells_how_to_reach_the_apps_with_fal_client() -> None:
    assert ready_text("http://127.0.0.1:8787", ["local/greeter"]).splitlines() == [
        "gateway at http://127.0.0.1:8787 (HTTPS on the same port); `falemu ps` and `falemu logs -f` from another"
        " terminal",
        'fal_client: run `eval "$(falemu env)"`, then fal_client.run("local/greeter/<path>", arguments={...})',
        "press Ctrl-C to stop",
    ]


def test_env_warns_when_no_falemu_up_runs_and_not_for_explicit_flags() -> None:
    assert env_warnings("127.0.0.1:8787", "settings") == [
        "no falemu up is running; these exports point at 127.0.0.1:8787, from falemu's settings",
        "until a falemu up serves 127.0.0.1:8787, HTTPS to other hosts fails in a shell with these exports "
        "(HTTPS_PROXY): start one, or `unset HTTPS_PROXY`",
    ]
    assert env_warnings("127.0.0.1:9443", "flags") == []
    assert env_warnings("127.0.0.1:8787", "the falemu up of pid 7") == []


def test_env_with_an_explicit_port_prints_no_warning(tmp_path: Path) -> None:
    env = {"XDG_CONFIG_HOME": str(tmp_path / "config"), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    result = CliRunner().invoke(cli, ["env", "--project", str(EXAMPLE), "--port", "9443"], env=env)
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    assert "export FAL_RUN_HOST=127.0.0.1:9443\n" in result.stdout


def test_config_show_prints_paths_as_paths() -> None:
    result = CliRunner().invoke(cli, ["config", "show", "greeter", "--project", str(EXAMPLE)])
    assert result.exit_code == 0, result.output
    line = next(line for line in result.stdout.splitlines() if line.strip().startswith("image.dockerfile"))
    assert line.split()[1] == str(EXAMPLE / "Dockerfile")
