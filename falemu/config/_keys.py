"""The keys fal 1.83.0 reads from an app table and its sub-tables."""

from __future__ import annotations

# Every key fal 1.83.0 reads from an app table, in the order it pops them.
APP_KEYS = (
    "image",
    "python_entry_point",
    "ref",
    "auth",
    "deployment_strategy",
    "team",
    "name",
    "requirements",
    "requirements_context_dir",
    "python_version",
    "min_concurrency",
    "max_concurrency",
    "max_multiplexing",
    "concurrency_buffer",
    "concurrency_buffer_perc",
    "scaling_delay",
    "request_timeout",
    "request_start_timeout",
    "startup_timeout",
    "keep_alive",
    "private_logs",
    "machine_type",
    "num_gpus",
    "regions",
    "app_files",
    "app_files_ignore",
    "app_files_context_dir",
    "exposed_port",
    "metrics_port",
    "_scheduler",
    "_scheduler_options",
    "skip_retry_conditions",
    "retry_config",
    "termination_grace_period_seconds",
    "secrets",
    "data_mounts",
    "health_check",
    "no_scale",
    "app_scale_settings",
)
_POPPED = APP_KEYS[3:-2]  # popped before fal validates any of them
HEALTH_CHECK_KEYS = ("path", "start_period_seconds", "timeout_seconds", "failure_threshold", "call_regularly", "method")
