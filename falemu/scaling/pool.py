"""The interface between the gateway and the scaling controller.

The gateway never starts or stops runners itself: for each request it asks the app's
:class:`RunnerPool` for a :class:`Lease` on a runner with spare ``max_multiplexing`` capacity and gives
it back when the request ends. The controller behind the pool decides when runners start and stop.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from falemu.config.model import AppConfig
from falemu.runtime.base import Runner

Outcome = Literal["ok", "error", "replace"]


@dataclass
class Lease:
    """One request's hold on one runner."""

    runner: Runner
    request_id: str
    started: float = field(default=0.0)  # clock time the lease was granted


class RequestStartTimeout(Exception):
    """No runner could take the request within its start timeout (504, X-Fal-Request-Timeout-Type: user)."""


class RunnerPool(Protocol):
    app: AppConfig

    async def acquire(self, request_id: str, *, start_timeout: float | None = None, hint: str | None = None) -> Lease:
        """Wait for a runner with spare capacity, scaling up as the policy allows.

        ``hint`` (``X-Fal-Runner-Hint``) prefers a free runner that reported that hint; with none free,
        any runner will do, as on fal: hints never make a request wait.

        Raises :class:`RequestStartTimeout` when ``start_timeout`` (seconds) passes first, and
        :class:`falemu.errors.RunnerError` when runners cannot be started at all.
        """
        ...

    def try_acquire(self, request_id: str, hint: str | None = None) -> Lease | None:
        """A lease at once when a runner has spare capacity and no request waits before this one, else None."""
        ...

    async def release(self, lease: Lease, outcome: Outcome = "ok") -> None:
        """Give the runner back. ``replace`` stops it (fal replaces a runner after a 503 or a request timeout)."""
        ...

    def release_nowait(self, lease: Lease, outcome: Outcome = "ok") -> None:
        """:meth:`release` for callers outside a coroutine (the gateway's callback-driven fast path)."""
        ...

    def set_hints(self, runner_id: str, hints: Sequence[str]) -> None:
        """What a runner said it is specialized for (its ``X-Fal-Runner-Hints`` response header)."""
        ...

    def runners(self) -> list[RunnerInfo]:
        """A snapshot of the pool's runners for `falemu ps` and the live view."""
        ...


@dataclass(frozen=True)
class RunnerInfo:
    id: str
    app: str
    state: str  # PENDING, SETUP, IDLE, RUNNING, DRAINING, TERMINATING, TERMINATED, FAILURE_DELAY
    url: str | None
    in_flight: int
    served: int
    started_at: float
    last_request_at: float | None
    revision: int = 1  # the app revision the runner runs (a reload under `falemu up --watch` makes the next)
