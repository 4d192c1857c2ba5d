"""The dashboard API's request and response bodies: its published OpenAPI surface."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Model(BaseModel):
    model_config = ConfigDict(extra="allow")


class Problem(BaseModel):
    detail: str


class Percentiles(BaseModel):
    p50: float | None
    p75: float | None
    p90: float | None
    p95: float | None


class Summary(BaseModel):
    total: int
    success: int
    client_errors: int
    server_errors: int
    success_rate: float | None
    cold_boots: int
    startup: Percentiles
    execution: Percentiles
    end_to_end: Percentiles


class Fault(BaseModel):
    """A fault injected with ``falemu chaos`` or ``falemu_app.faults``."""

    id: str
    app: str
    kind: str
    description: str
    started: float
    ended: float | None
    reason: str | None
    applied: int
    targets: list[str]


class Activity(BaseModel):
    """A fault or rollout event (``falemu chaos``, ``falemu up --watch``)."""

    ts: float
    app: str
    event: str
    text: str


class AppSummary(Model):
    name: str
    alias: str
    id: str
    shape: str
    auth: str
    machine_type: str
    machine_types: list[str]
    url: str
    queue_url: str
    runners: dict[str, int]
    in_flight: int
    queue_depth: int
    requests_last_hour: int
    success_rate_last_hour: float | None
    revision: int = 1
    faults: list[Fault] = []


class Overview(BaseModel):
    owner: str
    base_url: str
    apps: list[AppSummary]
    requests_kept: int
    body_bytes: int
    since: float
    version: int


class ConfigEntry(BaseModel):
    key: str
    value: Any
    source: str


class Stage(BaseModel):
    stage: str
    label: str
    seconds: float


class StateAt(BaseModel):
    state: str
    at: float


class Runner(Model):
    id: str
    app: str
    state: str
    machine_type: str
    in_flight: int
    served: int | None
    created_at: float | None
    stages: list[Stage]
    cold_start_seconds: float | None
    states: dict[str, float]
    billed_seconds: float
    history: list[StateAt]
    error_type: str | None
    error: str
    stop_reason: str
    log_lines: int
    revision: int = 1


class AppDetail(AppSummary):
    config: list[ConfigEntry]
    scaling: dict[str, Any]
    warnings: list[str]
    runners_detail: list[Runner]
    fault_history: list[Fault] = []
    activity: list[Activity] = []


class OpenAPIView(BaseModel):
    app: str
    available: bool
    message: str | None = None
    document: dict[str, Any] | None = None


class LogLine(BaseModel):
    timestamp: float
    stream: str
    message: str


class Logs(BaseModel):
    runner: str
    lines: list[LogLine]
    total: int


class RequestRow(BaseModel):
    id: str
    app: str
    endpoint: str
    method: str
    mode: str
    state: Literal["queued", "running", "done"]
    status: int | None
    error_type: str | None
    received_at: float
    seq: int = Field(description="the order in which the history took it: page with older_than")
    queue_wait: float | None
    execution: float | None
    total: float | None
    runner: str
    attempts: int


class BodyView(BaseModel):
    content_type: str
    size: int
    truncated: bool
    json_: Any = Field(default=None, alias="json")
    text: str | None = None
    base64: str | None = None

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)


class RequestDetail(RequestRow):
    store_io: bool
    bodies_dropped: bool
    input: BodyView | None
    output: BodyView | None
    replayable: bool
    logs: list[LogLine]
    logs_around: list[LogLine] | None = None


class RequestList(BaseModel):
    requests: list[RequestRow]
    matched: int
    kept: int


class Window(BaseModel):
    start: float
    end: float


class Bucket(BaseModel):
    start: float
    total: int
    success: int
    client_errors: int
    server_errors: int
    cold_boots: int
    startup_p50: float | None
    startup_p90: float | None
    execution_p50: float | None
    execution_p75: float | None
    execution_p90: float | None
    end_to_end_p50: float | None


class Series(BaseModel):
    granularity: str
    seconds: float
    buckets: list[Bucket]


class EndpointSummary(Summary):
    app: str
    endpoint: str


class RunnerTime(BaseModel):
    runner: str
    app: str
    machine_type: str
    states: dict[str, float]
    billed_seconds: float


class Analytics(BaseModel):
    app: str | None
    endpoint: str | None
    window: Window
    summary: Summary
    series: Series
    endpoints: list[EndpointSummary]
    runners: list[RunnerTime]
    recent_errors: list[RequestRow]
    slowest: list[RequestRow]


class ErrorGroup(BaseModel):
    error_type: str
    status: int
    app: str
    endpoint: str
    count: int
    first: float
    last: float
    request_ids: list[str]


class RunnerFailure(BaseModel):
    runner: str
    app: str
    error_type: str
    message: str
    at: float
    logs: list[LogLine]


class Errors(BaseModel):
    window: Window
    total: int
    groups: list[ErrorGroup]
    runner_failures: list[RunnerFailure]


class MachineCost(BaseModel):
    machine_type: str
    states: dict[str, float]
    billed_seconds: float
    hourly: float | None
    cost: float | None


class Cost(BaseModel):
    window: Window
    currency: str
    machines: list[MachineCost]
    total_cost: float
    unpriced_machine_types: list[str]
    prices: dict[str, Any]


class VariantOutcome(BaseModel):
    keep_alive: int
    min_concurrency: int
    max_multiplexing: int
    current: bool
    requests: int
    runner_starts: int
    cold_boots: int
    startup_p50: float | None
    startup_p95: float | None
    setup_seconds: float
    idle_seconds: float
    running_seconds: float
    billed_seconds: float
    cost: float | None
    peak_runners: int


class AdvisorWindow(BaseModel):
    start: float
    end: float
    seconds: float


class Advisor(BaseModel):
    app: str
    machine_type: str
    currency: str
    window: AdvisorWindow
    requests: int
    cold_start_seconds: float
    price_per_second: float | None
    variants: list[VariantOutcome]
    recommendation: dict[str, Any] | None


class Report(BaseModel):
    window: Window
    currency: str
    apps: list[dict[str, Any]]


class PlaygroundRun(BaseModel):
    app: str = Field(min_length=1, max_length=200)
    # A URL path: printable ASCII without spaces (anything else must come percent-encoded).
    endpoint: str = Field(default="/", max_length=2000, pattern=r"^[!-~]*$")
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    input: Any = None
    mode: Literal["queue", "sync"] = "queue"


class RunStarted(BaseModel):
    request_id: str
    mode: str
    status: int | None = None
    state: str
    output: BodyView | None = None
    error: str | None = None


class Result(BaseModel):
    request_id: str
    status: int
    output: BodyView | None


class Uploaded(BaseModel):
    file_url: str
    content_type: str
    size: int


class Capabilities(BaseModel):
    uploads: Literal["cdn", "data-uri"]
    upload_url: str | None = None
    max_data_uri_bytes: int
