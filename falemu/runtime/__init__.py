"""Runners: the Runtime interface and its Docker and process implementations.

Importing this package loads neither docker nor any runtime: :func:`select_runtime` imports the one
it picks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from falemu.runtime.base import PreparedApp, Runner, RunnerSpec, Runtime

if TYPE_CHECKING:
    from falemu.config.settings import Settings
    from falemu.events import EventSink


def select_runtime(settings: Settings, events: EventSink | None = None, *, exit_cleanup: bool = False) -> Runtime:
    """The runtime ``settings.runtime`` asks for.

    ``docker`` fails with :class:`~falemu.errors.EngineUnavailable` when no engine answers; ``auto``
    then falls back to :class:`~falemu.runtime.process.ProcessRuntime` with a one-line notice of what
    it does not emulate. ``exit_cleanup`` removes the runtime's runners at exit, Ctrl-C and SIGTERM.
    """
    from falemu.errors import EngineUnavailable
    from falemu.events import Notice, null_sink

    sink = events or null_sink
    if settings.runtime != "process":
        try:
            from falemu.runtime.docker import DockerRuntime

            return DockerRuntime(
                events=sink,
                exit_cleanup=exit_cleanup,
                python_image=settings.python_image or None,
                probe_gpus=settings.gpu != "off",
            )
        except (EngineUnavailable, ImportError) as exc:
            if settings.runtime == "docker":
                raise
            reason = exc.message if isinstance(exc, EngineUnavailable) else "the docker package is not installed"
            from falemu.runtime.process import LIMITS

            sink(Notice("falemu", level="warning", message=f"{reason}; runners run as host processes ({LIMITS})"))
    from falemu.runtime.cleanup import install_exit_cleanup
    from falemu.runtime.process import ProcessRuntime

    runtime = ProcessRuntime()
    if exit_cleanup:
        install_exit_cleanup(runtime.close)
    return runtime


__all__ = ["PreparedApp", "Runner", "RunnerSpec", "Runtime", "select_runtime"]
