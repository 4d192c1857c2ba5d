"""The dashboard in real headless Chromium (Debian's, driven by Playwright) against `falemu up` of the
examples on the real engine. Each page's screenshot goes to ``$FALEMU_SCREENSHOTS`` (default
``.ci/artifacts/screenshots``), which CI keeps."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from up_process import UpProcess

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parents[2]
DIRECT = ROOT / "examples" / "direct-server"
BROKEN = ROOT / "tests" / "apps" / "broken-500"
PROXY_APP = ROOT / "examples" / "proxy-app"
CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SHOTS = Path(os.environ.get("FALEMU_SCREENSHOTS", str(ROOT / ".ci" / "artifacts" / "screenshots")))


def nearest_rank(values: list[float], p: int) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1]


def start_up(project: Path, env: dict[str, str]) -> UpProcess:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "falemu",
            "up",
            "--project",
            str(project),
            "--port",
            "0",
            "--runtime",
            "docker",
            "--json",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return UpProcess(proc)


def stop_up(up: UpProcess) -> None:
    if up.proc.poll() is None:
        up.proc.send_signal(signal.SIGINT)
        try:
            up.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            up.proc.kill()
            up.proc.wait()


@pytest.fixture
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            yield b
        finally:
            b.close()


def shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def wait_requests(base: str, count: int, timeout: float = 60) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    rows: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        rows = httpx.get(f"{base}/_falemu/api/requests", params={"limit": 1000}, timeout=10).json()["requests"]
        if len(rows) >= count and all(r["state"] == "done" for r in rows):
            return rows
        time.sleep(0.2)
    raise AssertionError(f"expected {count} finished requests, have {rows}")


def test_playground_history_replay_analytics_and_errors(env: dict[str, str], browser: Any) -> None:
    direct = start_up(DIRECT, env)
    broken = start_up(BROKEN, env)
    try:
        base = direct.wait_for("Ready")["url"]
        broken_base = broken.wait_for("Ready")["url"]
        page = browser.new_page(viewport={"width": 1440, "height": 1000})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))

        # The first overview fetch fails and no live event comes to ask for another (a quiet app; or its first
        # tick came while the failing fetch was under way): the page asks again, unprompted.
        failed: list[str] = []

        def fail_once(route: Any) -> None:
            if failed:
                route.continue_()
            else:
                failed.append(route.request.url)
                route.fulfill(status=503, content_type="application/json", body='{"detail": "restarting"}')

        # And one of its modules is dropped on the way, as Chromium drops requests in flight when a container
        # start changes the machine's network (net::ERR_NETWORK_CHANGED): the page loads itself again.
        dropped: list[str] = []

        def drop_once(route: Any) -> None:  # its preload and its import: the first load cannot have it
            if len(dropped) >= 2:
                route.continue_()
            else:
                dropped.append(route.request.url)
                route.abort("internetdisconnected")

        page.route("**/_falemu/dashboard/pages/cost.js", drop_once)
        page.route("**/_falemu/api/overview", fail_once)
        page.route("**/_falemu/api/events", lambda route: route.abort())
        page.goto(f"{base}/")
        page.wait_for_selector("[data-app=greeter]")
        assert len(dropped) == 2
        assert len(failed) == 1
        page.unroute("**/_falemu/dashboard/pages/cost.js")
        page.unroute("**/_falemu/api/overview")
        page.unroute("**/_falemu/api/events")
        page.wait_for_selector(".foot .live:not(.off)")  # the page's EventSource connected again by itself
        page.wait_for_selector("[data-runner] .stage")  # the warm runner with its cold-start stages
        shot(page, "01-apps-and-runners")

        # Playground, queue: fill the generated form, run, see the output and the logs
        page.goto(f"{base}/#/playground/greeter")
        page.wait_for_selector("[data-field=name] input")
        assert page.get_attribute("[data-field=excited]", "data-widget") == "toggle"
        page.fill("[data-field=name] input", "browser")
        page.click("[data-testid=run-queue]")
        result = page.wait_for_selector("[data-testid=results] .result[data-state=done]", timeout=60_000)
        assert "Hello, browser." in result.inner_text()
        page.wait_for_function(
            "() => document.querySelector('[data-testid=results] .result [data-testid=logs]').innerText.includes('POST /greet')",  # noqa: E501
            timeout=30_000,
        )
        # sync
        page.fill("[data-field=name] input", "sync")
        # excited has a default: it sits under "Additional settings", as on fal
        assert page.is_hidden("[data-field=excited] .toggle")
        page.click("details.more > summary")
        page.click("[data-field=excited] .toggle")
        page.click("[data-testid=run-sync]")
        page.wait_for_function(
            "() => [...document.querySelectorAll('[data-testid=results] .result')].some(r => r.innerText.includes('Hello, sync!'))",  # noqa: E501
            timeout=60_000,
        )
        page.wait_for_function(
            "() => document.querySelector('[data-testid=results] .result').querySelector('[data-testid=logs]').innerText.includes('POST /greet')",  # noqa: E501
            timeout=30_000,
        )
        shot(page, "02-playground")

        # a few more requests, then the history lists every one of them
        with httpx.Client(timeout=30) as client:
            for name in ("a", "bb", "ccc"):
                assert client.post(f"{base}/local/greeter/greet", json={"name": name}).status_code == 200
            assert client.post(f"{base}/local/greeter/greet", json={"name": ""}).status_code == 422
        rows = wait_requests(base, 6)
        page.goto(f"{base}/#/requests")
        page.wait_for_selector("table.requests")
        page.wait_for_function(
            f"() => document.querySelectorAll('table.requests [data-request]').length >= {len(rows)}"
        )
        listed = page.eval_on_selector_all("table.requests [data-request]", "els => els.map(e => e.dataset.request)")
        assert {r["id"] for r in rows} <= set(listed)
        shot(page, "03-requests")

        # open one and replay it: the same output again
        queued = next(r for r in rows if r["mode"] == "queue")
        page.goto(f"{base}/#/requests/{queued['id']}")
        page.wait_for_selector("[data-testid=replay]:not([disabled])")
        page.click("[data-testid=replay]")
        replayed = page.wait_for_selector("[data-testid=replayed] a").inner_text()
        wait_requests(base, 7)
        first = httpx.get(f"{base}/_falemu/api/requests/{queued['id']}/result", timeout=10).json()["output"]["json"]
        again = httpx.get(f"{base}/_falemu/api/requests/{replayed}/result", timeout=10).json()["output"]["json"]
        assert again["message"] == first["message"] == "Hello, browser."
        shot(page, "04-request")

        # analytics equal the figures computed here from the requests made
        rows = wait_requests(base, 7)
        ok = [r for r in rows if r["status"] == 200]
        page.goto(f"{base}/#/analytics?app=greeter")
        page.wait_for_selector("[data-kpi=total]")
        page.wait_for_function(
            f"() => JSON.parse(document.querySelector('[data-testid=kpi-json]').textContent).total === {len(rows)}"
        )
        shown = page.evaluate("() => JSON.parse(document.querySelector('[data-testid=kpi-json]').textContent)")
        assert (shown["total"], shown["success"], shown["client_errors"], shown["server_errors"]) == (
            len(rows),
            len(ok),
            len(rows) - len(ok),
            0,
        )
        assert page.inner_text("[data-kpi=total] .value") == str(len(rows))
        for p in (50, 75, 90, 95):
            assert shown["execution"][f"p{p}"] == pytest.approx(nearest_rank([r["execution"] for r in ok], p), abs=2e-6)
            assert shown["startup"][f"p{p}"] == pytest.approx(
                nearest_rank([r["queue_wait"] for r in rows], p), abs=2e-6
            )
        shot(page, "05-analytics")

        # a 422 and a 500 from the broken app, grouped under Errors
        with httpx.Client(timeout=60) as client:
            assert client.post(f"{broken_base}/local/crash/double", json={"n": -1}).status_code == 422
            assert client.post(f"{broken_base}/local/crash/double", json={"n": 600}).status_code == 500
        wait_requests(broken_base, 2)
        page.goto(f"{broken_base}/#/errors")
        page.wait_for_selector("table.error-groups")
        groups = page.eval_on_selector_all("table.error-groups [data-group]", "els => els.map(e => e.dataset.group)")
        assert "runner_server_error 500 /double" in groups
        assert "user_error 422 /double" in groups
        page.click("[data-group='runner_server_error 500 /double']")
        detail = page.wait_for_selector("[data-testid=error-detail]").inner_text()
        assert '"n": 600' in detail
        assert "Internal Server Error" in detail
        shot(page, "06-errors")

        page.goto(f"{base}/#/cost")
        page.wait_for_selector("table.advisor")
        shot(page, "07-cost-and-advisor")
        assert not errors, errors
    finally:
        stop_up(direct)
        stop_up(broken)


def test_image_upload_renders_the_output_image(env: dict[str, str], browser: Any) -> None:
    """The proxy App's /vary takes an image (fal's ImageField): uploaded to the local CDN, varied, shown."""
    up = start_up(PROXY_APP, env)
    try:
        base = up.wait_for("Ready")["url"]
        page = browser.new_page(viewport={"width": 1440, "height": 1000})
        page.goto(f"{base}/#/playground/proxy/vary")
        upload = page.wait_for_selector("input[type=file][data-upload]", timeout=60_000)
        png = Path(__file__).with_name("pixel.png")
        upload.set_input_files(str(png))
        page.wait_for_selector(".drop img.preview")
        page.click("[data-testid=run-queue]")
        page.wait_for_selector("[data-testid=results] .result[data-state=done] .gallery img", timeout=120_000)
        page.wait_for_function("document.querySelector('nav.side .foot').innerText.includes('1 request kept')")
        shot(page, "08-proxy-app-image")
    finally:
        stop_up(up)
