"""The one error hierarchy of falemu.

Every error a user can cause carries a one-line ``message``, an optional ``hint`` that says how to
fix it, and the ``exit_code`` the CLI exits with. The CLI prints ``error: <message>`` and, when there
is one, ``hint: <hint>``; it never shows a traceback unless ``--debug`` is given.
"""

from __future__ import annotations


class FalemuError(Exception):
    """Base of every error falemu raises on purpose."""

    exit_code: int = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class ConfigError(FalemuError):
    """The pyproject (or falemu's own settings) is not what fal would accept.

    ``message`` is fal's own message, word for word, where fal has one.
    """

    exit_code = 2


class UsageError(FalemuError):
    """The command line asks for something that cannot be done (unknown app, bad flag value)."""

    exit_code = 2


class EngineUnavailable(FalemuError):
    """No Docker engine answers at the configured address."""


class ImageError(FalemuError):
    """An image could not be built, found or pulled."""


class GpuUnavailable(FalemuError):
    """GPUs were required (``--gpu require``) but the engine cannot give them."""


class RunnerError(FalemuError):
    """A runner failed to start or to become ready.

    ``error_type`` is fal's error type for the failure (``startup_timeout``, ...), ``logs`` the last log
    lines of the runner when there are any.
    """

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        error_type: str = "runner_scheduling_failure",
        logs: str = "",
        exit_code: int | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.error_type = error_type
        self.logs = logs
        if exit_code is not None:
            self.container_exit_code: int | None = exit_code
        else:
            self.container_exit_code = None


class StartupTimeout(RunnerError):
    """The runner did not become ready within ``startup_timeout`` seconds."""

    def __init__(self, message: str, *, hint: str | None = None, logs: str = "") -> None:
        super().__init__(message, hint=hint, error_type="startup_timeout", logs=logs)


class ContractViolation(FalemuError):
    """``falemu check`` found violations."""
