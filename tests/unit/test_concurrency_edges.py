"""Edge cases of the concurrent parts: leases under cancellation, stop() re-entrance.

Real AppController on the FakeRuntime (in-process HTTP runners), real Emulator with uvicorn.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from pathlib import Path
from typing import Any

from falemu.clock import FakeClock
from falemu.config.model import AppConfig, AppShape, ScalingConfig
from falemu.config.settings import Settings
from falemu.emulator import Emulator
from falemu.gateway.queue import QueuedRequest, QueueManager
from falemu.queue import EMPTY
from falemu.runtime.base import PreparedApp, RunnerSpec
from falemu.runtime.fake import FakeRuntime
from falemu.scaling.controller import AppController
from falemu.scaling.pool import Lease, Outcome


def make_app(**scaling: Any) -> AppConfig:
    return AppConfig(
        name="greeter",
        alias="greeter",
        shape=AppShape.DIRECT_SERVER,
        project_root=Path("/nonexistent"),
        exposed_port=8000,
        auth="public",
        scaling=ScalingConfig(**scaling),
    )


def make_controller(runtime: FakeRuntime, app: AppConfig) -> AppController:
    spec = RunnerSpec(
        prepared=PreparedApp(app=app, image=None, built=False), runner_id="", owner="local", data_dir=Path("/tmp")
    )
    return AppController(app, runtime, spec, clock=FakeClock(), tick=0.05, health_interval=3600)


class CancelOnGrant:
    """The controller as a pool, calling ``on_grant`` in the very step its acquire returns a lease."""

    def __init__(self, ctl: AppController) -> None:
        self.ctl = ctl
        self.app = ctl.app
        self.on_grant: Any = None

    async def acquire(self, request_id: str, *, start_timeout: float | None = None, hint: str | None = None) -> Lease:
        lease = await self.ctl.acquire(request_id, start_timeout=start_timeout, hint=hint)
        if self.on_grant is not None:
            self.on_grant()
        return lease

    def try_acquire(self, request_id: str, hint: str | None = None) -> Lease | None:
        return None  # every lease goes through acquire, where on_grant runs

    def set_hints(self, runner_id: str, hints: Any) -> None:
        self.ctl.set_hints(runner_id, hints)

    async def release(self, lease: Lease, outcome: Outcome = "ok") -> None:
        await self.ctl.release(lease, outcome)

    def release_nowait(self, lease: Lease, outcome: Outcome = "ok") -> None:
        self.ctl.release_nowait(lease, outcome)

    def runners(self) -> Any:
        return self.ctl.runners()


def test_low_priority_request_cancelled_as_its_runner_is_granted_gives_the_lease_back() -> None:
    async def main() -> None:
        runtime = FakeRuntime()
        ctl = make_controller(runtime, make_app(max_concurrency=1, keep_alive=300))
        await ctl.start()
        try:
            busy = await ctl.acquire("busy")
            pool = CancelOnGrant(ctl)
            queue = QueueManager(None)  # type: ignore[arg-type]  # _acquire_low needs no gateway
            rec = QueuedRequest(
                id="low", alias="greeter", owner="local", method="POST", target=b"/", endpoint="local/greeter/",
                headers=[], body=EMPTY, caller=None, base_url="", seq=1, priority="low",
            )  # fmt: skip
            task = asyncio.create_task(queue._acquire_low(rec, pool, None))
            pool.on_grant = task.cancel  # the request is cancelled just as the runner is handed to it
            while ctl.waiting == 0:
                await asyncio.sleep(0.01)
            await ctl.release(busy)
            try:
                await task
            except asyncio.CancelledError:
                pass
            await asyncio.sleep(0.05)
            (runner,) = ctl.runners()
            assert runner.in_flight == 0
            lease = await asyncio.wait_for(ctl.acquire("next"), 5)  # the runner is free for the next one
            await ctl.release(lease)
        finally:
            await ctl.close()
            runtime.close()
        assert runtime.running() == []

    asyncio.run(main())


def test_status_waits_that_time_out_leave_nothing_behind() -> None:
    async def main() -> None:
        rec = QueuedRequest(
            id="r", alias="greeter", owner="local", method="POST", target=b"/", endpoint="local/greeter/",
            headers=[], body=EMPTY, caller=None, base_url="", seq=1,
        )  # fmt: skip
        for _ in range(3):  # an SSE status stream on a request that does not change for a while
            await rec.changed(rec.version, timeout=0.01)
        assert rec.waiters == []
        waiting = asyncio.create_task(rec.changed(rec.version))
        await asyncio.sleep(0.01)
        rec.touch()
        await asyncio.wait_for(waiting, 5)  # a change still wakes it

    asyncio.run(main())


def one_app_project(tmp_path: Path) -> Any:
    from falemu.config.model import Project

    return Project(root=tmp_path, pyproject=tmp_path / "pyproject.toml", apps={"greeter": make_app(keep_alive=300)})


def test_a_stop_cut_short_is_completed_by_the_next_call(tmp_path: Path, isolated_home: Path) -> None:
    runtime = FakeRuntime(stop_delay=0.5)  # the shutdown takes a while: there is something to wait for
    settings = Settings(port=0, data_dir=isolated_home / "data")
    emu = Emulator(one_app_project(tmp_path), settings, runtime=runtime, warm=True)
    emu.start()
    thread = emu._thread
    assert thread is not None
    assert runtime.running() != []
    real_join = thread.join
    calls: list[float | None] = []

    def interrupted_join(timeout: float | None = None) -> None:
        calls.append(timeout)
        if len(calls) == 1:
            raise KeyboardInterrupt  # a second Ctrl-C while the first stop() waits
        real_join(timeout)

    thread.join = interrupted_join  # type: ignore[method-assign]
    try:
        try:
            emu.stop()
        except KeyboardInterrupt:
            pass
        emu.stop()  # what `falemu up` does in its finally block
        assert not thread.is_alive()  # the second call waited for the shutdown the first one started
        assert runtime.running() == []
    finally:
        real_join(30)
        runtime.close()


def test_stop_before_the_loop_task_exists_starts_no_runner(tmp_path: Path, isolated_home: Path) -> None:
    runtime = FakeRuntime(start_delay=2.0)
    settings = Settings(port=0, data_dir=isolated_home / "data")
    emu = Emulator(one_app_project(tmp_path), settings, runtime=runtime, warm=True)
    real_bind = emu._bind

    def bind_then_stop() -> Any:
        sock = real_bind()
        emu.stop()  # lands after start()'s own check and before the loop thread runs
        return sock

    emu._bind = bind_then_stop  # type: ignore[method-assign]
    errors: list[BaseException] = []
    try:
        emu.start()
    except Exception as exc:
        errors.append(exc)
    finally:
        emu.stop()
        runtime.close()
    assert len(errors) == 1
    assert runtime.started == []  # no runner start was even attempted
    assert not any(t.name == "falemu-gateway" and t.is_alive() for t in threading.enumerate())


def test_a_loop_that_cannot_be_created_fails_start_instead_of_hanging(
    tmp_path: Path, isolated_home: Path, monkeypatch: Any
) -> None:
    import falemu.gateway.loop
    from falemu.errors import FalemuError

    def broken() -> Any:
        raise ImportError("no module named uvloop")

    monkeypatch.setattr(falemu.gateway.loop, "new_event_loop", broken)
    runtime = FakeRuntime()
    emu = Emulator(one_app_project(tmp_path), Settings(port=0, data_dir=isolated_home / "data"), runtime=runtime)
    errors: list[BaseException] = []

    def start() -> None:
        try:
            emu.start()
        except BaseException as exc:
            errors.append(exc)

    starter = threading.Thread(target=start, daemon=True)
    starter.start()
    starter.join(10)
    hung = starter.is_alive()
    if hung:
        emu._ready.set()  # let the stuck start() go before failing
    assert not hung
    assert len(errors) == 1
    assert isinstance(errors[0], FalemuError)
    assert "event loop" in str(errors[0])
    assert runtime.started == []
    with socket.socket() as again:  # the listening socket was given back
        again.bind(("127.0.0.1", emu.port))
