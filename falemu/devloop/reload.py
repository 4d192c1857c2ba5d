"""One reload of one app: its config and files as they are now become a new revision, rolled out by
the app's ``deployment_strategy``.

1. The pyproject is parsed again (fal's rules). The app's deployed name must not change. fal's
   inherited scale settings (``keep_alive``, ``min_concurrency``, ...) keep the running revision's
   values unless the pyproject sets ``app_scale_settings = true``, as ``fal deploy`` does.
2. The image is built with the engine's layer cache: only the steps after the first changed one run.
   An unchanged build context maps to the same image tag: nothing is rolled out.
3. The new revision is rolled out (:mod:`falemu.devloop.rollout`).

A config error, a failed build or a new runner that fails to start leaves the serving revision as it
is, and says why in a :class:`~falemu.events.RolloutFailed` event (with the build's or the runner's
last lines). Reloads of one app run one at a time.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from falemu.devloop.rollout import RolloutResult, inherit_scale, plan_rollout, roll_out, strategy_of
from falemu.errors import ConfigError, FalemuError, RunnerError
from falemu.events import Notice, ReloadStarted, RolloutFailed

if TYPE_CHECKING:
    from falemu.config.model import AppConfig
    from falemu.emulator import Emulator
    from falemu.runtime.base import PreparedApp


@dataclass
class Revision:
    """One revision of an app, for ``falemu ps``."""

    number: int
    image: str
    strategy: str
    status: str  # serving | retired | failed
    created: float = field(default_factory=time.time)  # wall-clock time
    stage: str = ""  # where a failed revision failed: config | build | start
    error: str = ""


class Reloader:
    """Makes and rolls out new revisions of an emulator's apps (``Emulator.reload`` uses it)."""

    def __init__(self, emulator: Emulator) -> None:
        self.emulator = emulator
        self._locks: dict[str, threading.Lock] = {}
        self._lock = threading.RLock()
        self.revisions: dict[str, list[Revision]] = {}

    def history(self, name: str) -> list[Revision]:
        """The app's revisions, oldest first (revision 1 is what ``start()`` served)."""
        emu = self.emulator
        with self._lock:
            found = self.revisions.get(name)
            if found is None:
                prepared = emu.prepared[name]
                found = self.revisions[name] = [
                    Revision(1, prepared.image or "", strategy_of(emu.configs[name]), "serving")
                ]
            return found

    def reload(self, name: str, changes: Sequence[str] = (), *, since: float | None = None) -> RolloutResult | None:
        """Reload app ``name`` (its table key); see the module docstring."""
        emu = self.emulator
        with self._lock:
            lock = self._locks.setdefault(name, threading.Lock())
        with lock:
            return self._reload(name, list(changes), emu.clock.now() if since is None else since)

    def _reload(self, name: str, changes: list[str], since: float) -> RolloutResult | None:
        emu = self.emulator
        running = emu.configs[name]
        alias = running.alias
        history = self.history(name)
        controller = emu.controller(name)
        revision = max(r.number for r in history) + 1
        emu.events(ReloadStarted(alias, revision=revision, changes=changes))
        try:
            config = emu.reparse(name)
            if config.alias != alias:
                raise ConfigError(
                    f"the app's deployed name changed from {alias} to {config.alias}",
                    hint="restart falemu up to serve it under the new name",
                )
            config = inherit_scale(running, config)
        except FalemuError as exc:
            return self._failed(name, revision, controller.revision, "config", exc, config=running)
        try:
            prepared = emu.runtime.prepare(config, emu.events, emu.verbose)
        except FalemuError as exc:
            return self._failed(name, revision, controller.revision, "build", exc, config=config)
        current = emu.prepared[name]
        if prepared.image is not None and prepared.image == current.image and config == running:
            emu.events(
                Notice(
                    alias,
                    level="info",
                    message=f"{alias}: no change in the build context (image {prepared.image}); "
                    f"r{controller.revision} keeps serving",
                )
            )
            return None
        return self._roll_out(name, revision, config, prepared, since)

    def _roll_out(
        self, name: str, revision: int, config: AppConfig, prepared: PreparedApp, since: float
    ) -> RolloutResult:
        emu = self.emulator
        controller = emu.controller(name)
        spec = emu.runner_spec(name, prepared)
        plan = plan_rollout(
            strategy_of(config), config.scaling, controller.live, side_by_side=emu.runtime.name != "process"
        )
        if plan.note:
            emu.events(Notice(config.alias, level="info", message=f"{config.alias}: {plan.strategy}: {plan.note}"))
        record = Revision(revision, prepared.image or "", plan.strategy, "starting")
        with self._lock:
            self.history(name).append(record)

        def on_switch() -> None:
            emu.configs[name] = config
            emu.prepared[name] = prepared
            gateway = emu.gateway
            if gateway is not None:
                from falemu.gateway.apps import GatewayApp

                gateway.apps[config.alias] = GatewayApp(config=config, pool=controller)

        result: RolloutResult = emu.call(
            roll_out(
                controller,
                spec,
                revision,
                plan=plan,
                app=config,
                events=emu.events,
                clock=emu.clock,
                since=since,
                on_switch=on_switch,
            )
        )
        with self._lock:
            if result.ok:
                for older in self.history(name):
                    if older.status == "serving":
                        older.status = "retired"
                record.status = "serving"
            else:
                record.status, record.stage = "failed", "start"
                record.error = result.error.message if result.error is not None else ""
        return result

    def _failed(
        self, name: str, revision: int, serving: int, stage: str, exc: FalemuError, *, config: AppConfig
    ) -> RolloutResult:
        emu = self.emulator
        output = getattr(exc, "output", None)
        logs = "\n".join(str(line) for line in output) if isinstance(output, list) else ""
        message = exc.message + (f" ({exc.hint})" if exc.hint else "")
        error_type = getattr(exc, "error_type", "") or ("config_error" if stage == "config" else "build_error")
        emu.events(
            RolloutFailed(
                config.alias,
                revision=revision,
                serving=serving,
                stage=stage,
                error_type=error_type,
                message=message,
                logs=logs,
            )
        )
        with self._lock:
            self.history(name).append(
                Revision(revision, "", strategy_of(config), "failed", stage=stage, error=exc.message)
            )
        return RolloutResult(False, serving, error=RunnerError(message, error_type=error_type, logs=logs))

    def rows(self, name: str) -> list[dict[str, object]]:
        """The app's revisions as JSON-ready rows (``falemu ps``)."""
        with self._lock:
            return [dataclasses.asdict(r) for r in self.history(name)]
