"""What the scaling controller keeps per runner and per waiting request, its counters, and the
hooks falemu.chaos uses (:class:`StartFault`, :class:`FaultHooks`)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from falemu.errors import FalemuError, RunnerError
from falemu.runtime.base import Runner
from falemu.scaling.policy import RunnerState, WaitingRequest
from falemu.scaling.pool import Lease

if TYPE_CHECKING:
    from falemu.scaling.controller import AppController


@dataclass(frozen=True)
class StartFault:
    """What an injected fault does to one runner start (decided by falemu.chaos)."""

    error: RunnerError | None = None  # the start fails with this, as a setup() that raises
    delay: float = 0.0  # seconds more in SETUP (past startup_timeout: fal's startup_timeout failure)
    data_mode: str | None = None  # /data read-only or full for this runner


class FaultHooks(Protocol):
    """The controller's side of falemu.chaos: asked only while a fault of the app is in effect."""

    def on_start(self, app: str, runner_id: str) -> StartFault | None: ...

    def on_lease(self, controller: AppController, runner_id: str, request_id: str) -> None: ...


@dataclass
class PoolStats:
    """Counters of one app's pool since it started."""

    starts: int = 0
    cold_starts: int = 0  # starts ordered while a request was waiting for a runner
    failed_starts: int = 0
    stops: int = 0
    replaced: int = 0  # runners stopped after release(outcome="replace")
    served: int = 0
    peak_runners: int = 0  # most live runners at once (PENDING, SETUP, IDLE, RUNNING)


@dataclass
class Slot:
    id: str
    state: RunnerState
    started_at: float
    cold: bool = False
    ready_at: float | None = None
    last_request_at: float | None = None
    in_flight: int = 0
    served: int = 0
    runner: Runner | None = None
    stop_reason: str = ""
    hints: frozenset[str] = frozenset()  # what the runner reported it is specialized for
    revision: int = 1
    error: RunnerError | None = None  # why its start failed


@dataclass
class Waiter:
    request_id: str
    enqueued_at: float
    future: asyncio.Future[Lease] = field(repr=False)
    view: WaitingRequest = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.view = WaitingRequest(self.request_id, self.enqueued_at)


async def wait_for_tasks(tasks: set[asyncio.Task[None]], timeout: float | None) -> None:
    """Wait until ``tasks`` (a live set) is empty, without cancelling any; TimeoutError after ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    while tasks:
        remaining = None if deadline is None else deadline - loop.time()
        if remaining is not None and remaining <= 0:
            raise TimeoutError
        await asyncio.wait(list(tasks), timeout=remaining)


def as_runner_error(exc: BaseException) -> RunnerError:
    if isinstance(exc, RunnerError):
        return exc
    if isinstance(exc, FalemuError):
        return RunnerError(exc.message, hint=exc.hint)
    return RunnerError(f"starting the runner failed: {type(exc).__name__}: {exc}")
