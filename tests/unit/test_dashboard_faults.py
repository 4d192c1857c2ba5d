"""Faults and revisions in the dashboard: its JSON API on an Emulator with the FakeRuntime, and the page
in headless Chromium (Debian's, driven by Playwright)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from falemu.config.model import AppConfig, AppShape, Project, ScalingConfig
from falemu.config.settings import Settings
from falemu.emulator import Emulator
from falemu.events import RolloutFinished
from falemu.runtime.fake import FakeRuntime
from falemu.testing import AppHandle, wait_until

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


@pytest.fixture
def emu(tmp_path: Path, isolated_home: Path) -> Iterator[Emulator]:
    app = AppConfig(
        name="greeter",
        alias="greeter",
        shape=AppShape.DIRECT_SERVER,
        project_root=tmp_path,
        exposed_port=8000,
        auth="public",
        scaling=ScalingConfig(keep_alive=300),
    )
    project = Project(root=tmp_path, pyproject=tmp_path / "pyproject.toml", apps={"greeter": app})
    settings = Settings(port=0, data_dir=isolated_home / "data")
    with Emulator(project, settings, runtime=FakeRuntime(), warm=True) as e:
        yield e


def api(emu: Emulator, path: str) -> Any:
    return httpx.get(f"{emu.base_url}/_falemu/api{path}", timeout=10).json()


def test_faults_and_rollouts_in_the_dashboard_api(emu: Emulator) -> None:
    app = AppHandle(emu, "greeter")
    try:
        storm = app.faults.error(503, count=2)
        killed = app.faults.kill()
        (summary,) = api(emu, "/overview")["apps"]
        assert [(f["id"], f["kind"]) for f in summary["faults"]] == [("f1", "error"), ("f2", "kill")]
        assert summary["revision"] == 1
        for _ in range(3):
            app.request("POST", "/echo", json={})
        wait_until(lambda: storm.ended and killed.ended, timeout=10, what="both faults over")
        emu.events(RolloutFinished("greeter", revision=2, previous=1, strategy="rolling", seconds=2.5))
        detail = api(emu, "/apps/greeter")
        assert detail["faults"] == []
        rows = {f["id"]: f for f in detail["fault_history"]}
        assert (rows["f1"]["applied"], rows["f1"]["reason"], rows["f1"]["ended"] is not None) == (2, "count", True)
        assert rows["f2"]["targets"] == killed.targets
        texts = [a["text"] for a in detail["activity"]]
        assert texts[0] == "fault f1 in effect: the gateway answers 503 (runner_scheduling_failure) (2 requests)"
        assert "fault f1 ended (count); it hit 2" in texts
        assert texts[-1] == "r2 serves (rolling, 2.5 s after the change)"
        assert all(r["revision"] == 1 for r in detail["runners_detail"])
    finally:
        app.end_faults()
        app.close()


def test_the_page_shows_faults_in_effect_and_their_history(emu: Emulator) -> None:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium")
    from playwright.sync_api import sync_playwright

    app = AppHandle(emu, "greeter")
    try:
        app.faults.latency(0.01, seconds=120)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            try:
                page = browser.new_page()
                page.goto(emu.base_url + "/")
                badge = page.locator('.card [data-fault="f1"]')
                badge.wait_for(timeout=20_000)
                assert badge.inner_text() == "f1 latency"
                page.goto(emu.base_url + "/#/apps/greeter")
                row = page.locator('table.faults tr[data-fault="f1"]')
                row.wait_for(timeout=20_000)
                assert "in effect" in row.inner_text()
                app.end_faults()
                deadline = time.monotonic() + 20
                while "ended (cleared)" not in row.inner_text():
                    assert time.monotonic() < deadline, row.inner_text()
                    time.sleep(0.2)
                assert "fault f1 ended (cleared)" in page.locator("table.activity").inner_text()
            finally:
                browser.close()
    finally:
        app.end_faults()
        app.close()
