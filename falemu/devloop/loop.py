"""``falemu up --watch``: the watcher feeds one worker thread that reloads apps, one reload at a time.

Changes that arrive while an app is being rebuilt or rolled out are gathered and make one more reload
once it is done (never one per file). Apps are reloaded in the order their changes came.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

from falemu.devloop.watch import DEBOUNCE_MS, STEP_MS, Watcher
from falemu.errors import FalemuError
from falemu.events import Notice

if TYPE_CHECKING:
    from falemu.emulator import Emulator


class DevLoop:
    """Watch the apps of a running emulator and reload each on change (see the module docstring)."""

    def __init__(
        self,
        emulator: Emulator,
        apps: Sequence[str] | None = None,
        *,
        step_ms: int = STEP_MS,
        debounce_ms: int = DEBOUNCE_MS,
    ) -> None:
        self.emulator = emulator
        names = list(apps) if apps else emulator.apps
        configs = {name: emulator.configs[name] for name in names}
        self.watcher = Watcher(configs, self._changed, step_ms=step_ms, debounce_ms=debounce_ms)
        self._pending: dict[str, tuple[set[str], float]] = {}  # app -> (changed paths, first seen)
        self._cond = threading.Condition()
        self._stopped = False
        self._busy = False
        self._worker: threading.Thread | None = None

    @property
    def roots(self) -> list[str]:
        return [str(r) for r in self.watcher.roots]

    def start(self) -> DevLoop:
        self._worker = threading.Thread(target=self._work, name="falemu-reload", daemon=True)
        self._worker.start()
        self.watcher.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop watching; a reload in progress is left to the emulator's stop."""
        self.watcher.stop()
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        worker = self._worker
        if worker is not None and worker is not threading.current_thread():
            worker.join(timeout)

    def idle(self) -> bool:
        """No reload is running or waiting."""
        with self._cond:
            return not self._busy and not self._pending

    def _changed(self, app: str, paths: list[str]) -> None:
        now = self.emulator.clock.now()
        with self._cond:
            if self._stopped:
                return
            seen, first = self._pending.get(app, (set(), now))
            self._pending[app] = (seen | set(paths), first)
            self._cond.notify()

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._stopped:
                    self._cond.wait()
                if self._stopped:
                    return
                app = min(self._pending, key=lambda name: self._pending[name][1])
                paths, since = self._pending.pop(app)
                self._busy = True
            alias = self.emulator.configs[app].alias
            try:
                self.emulator.reload(app, sorted(paths), since=since)
            except FalemuError as exc:
                if not self.emulator.stopping:
                    self.emulator.events(
                        Notice(alias, level="warning", message=f"reloading {alias} failed: {exc.message}")
                    )
            except Exception as exc:  # the loop must survive anything one reload throws
                if not self.emulator.stopping:
                    message = f"reloading {alias} failed: {type(exc).__name__}: {exc}"
                    self.emulator.events(Notice(alias, level="warning", message=message))
            finally:
                with self._cond:
                    self._busy = False
