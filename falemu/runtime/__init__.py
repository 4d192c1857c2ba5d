"""Runners: the Runtime interface and its Docker and process implementations."""

from falemu.runtime.base import PreparedApp, Runner, RunnerSpec, Runtime

__all__ = ["PreparedApp", "Runner", "RunnerSpec", "Runtime"]
