"""What the dashboard keeps of a request and a runner (:mod:`~falemu.dashboard.history` fills them)."""

from __future__ import annotations

import bisect
import collections
from dataclasses import dataclass, field

LOG_LINES = 5_000  # a runner's last log lines kept


@dataclass(slots=True)
class Body:
    """The first ``body_cap`` bytes of a request's or response's body."""

    data: bytes
    size: int  # every byte seen, also those past the cap
    content_type: str = ""

    @property
    def truncated(self) -> bool:
        return self.size > len(self.data)


@dataclass(slots=True)
class RequestRecord:
    """One request as the dashboard shows it. Times are wall-clock seconds (``time.time()``)."""

    id: str
    app: str
    endpoint: str  # the path after /{owner}/{app}, with a leading slash
    method: str
    mode: str  # sync | queue
    received_at: float
    seq: int = 0  # the order in which the history took it (1, 2, ...)
    started_at: float | None = None
    finished_at: float | None = None
    queue_wait: float | None = None  # receipt to the start of execution: queue, cold start, retries
    execution: float | None = None  # on the runner (the last attempt)
    status: int | None = None
    error_type: str | None = None
    runner: str = ""
    attempts: int = 0
    store_io: bool = True
    # The bodies as the gateway handed them (the first ``body_cap`` bytes, by reference, never parsed);
    # ``input`` and ``output`` show them as :class:`Body`.
    input_data: bytes | None = None
    input_size: int = 0  # every byte seen, also those past the cap
    input_type: str = ""
    output_data: bytes | None = None
    output_size: int = 0
    output_type: str = ""
    bodies_dropped: bool = False  # the body budget ran out and this request's bodies were let go

    @property
    def input(self) -> Body | None:
        data = self.input_data
        return None if data is None else Body(data, self.input_size, self.input_type)

    @property
    def output(self) -> Body | None:
        data = self.output_data
        return None if data is None else Body(data, self.output_size, self.output_type)

    @property
    def state(self) -> str:
        if self.finished_at is not None:
            return "done"
        return "running" if self.started_at is not None else "queued"

    @property
    def total(self) -> float | None:
        return None if self.finished_at is None else max(0.0, self.finished_at - self.received_at)

    @property
    def startup(self) -> float | None:
        """fal's request startup: gateway receipt to execution start (queue wait plus any cold start)."""
        return self.queue_wait


@dataclass(slots=True)
class RunnerRecord:
    """One runner of an app: its states over time, its start-up stages and its recent log lines."""

    id: str
    app: str
    machine_type: str
    gpus: int
    created_at: float
    states: list[tuple[str, float]] = field(default_factory=list)  # (state, since), in order
    timeline: dict[str, float] = field(default_factory=dict)  # start-up stage -> seconds
    cold_start: bool = False  # started while a request waited for it
    ready_at: float | None = None
    stopped_at: float | None = None
    stop_reason: str = ""
    error_type: str | None = None
    error: str = ""
    revision: int = 1  # the app revision it runs (falemu up --watch)
    logs: collections.deque[tuple[float, str, str]] = field(
        default_factory=lambda: collections.deque(maxlen=LOG_LINES)
    )  # (ts, stream, line)

    @property
    def state(self) -> str:
        return self.states[-1][0] if self.states else "PENDING"

    def log_lines(self, since: float | None = None, until: float | None = None) -> list[tuple[float, str, str]]:
        lines = list(self.logs)  # one C call: safe against appends from the log threads
        if since is None and until is None:
            return lines
        keys = [ts for ts, _, _ in lines]
        lo = 0 if since is None else bisect.bisect_left(keys, since)
        hi = len(lines) if until is None else bisect.bisect_right(keys, until)
        return lines[lo:hi]


@dataclass(frozen=True)
class AppInfo:
    """What the history needs to know of an app's config."""

    machine_type: str = "XS"
    gpus: int = 0
