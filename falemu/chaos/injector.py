"""Applying faults to a running emulator, through hooks, on its event loop.

The gateway and each app's controller carry a ``faults`` attribute that is None while no fault of
theirs is in effect, so falemu's request path costs one attribute check when nothing is injected.
While one is:

* the gateway asks :meth:`Chaos.on_request` per request of the app (both sync paths, the queue per
  attempt): answer a platform error instead of forwarding, wait before forwarding, or cut the runner
  connection part-way through the answer;
* the controller asks :meth:`Chaos.on_start` per runner start (fail it, slow it, or give it a broken
  ``/data``) and tells :meth:`Chaos.on_lease` which runner took each request (to kill "the runner that
  serves the next request").

What falemu does next is its usual fal behaviour: a killed runner's queued request is retried on a new
runner and its sync caller gets 503 ``runner_disconnected``; injected 503 and 504 answers of queued
requests are retried (``x-fal-no-retry`` respected), failed starts count towards FAILURE_DELAY.

Every fault says so in events (:class:`~falemu.events.FaultStarted`, ``FaultApplied``, ``FaultEnded``).
A fault ends when its count or window runs out or it is cleared; ending a ``data`` fault replaces the
runners that ran with it, and clearing a ``starts`` fault lifts the back-off its failures caused.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from falemu.chaos.faults import REQUEST_KINDS, Fault, FaultSchedule, FaultSpec, RequestPlan
from falemu.errors import RunnerError, UsageError
from falemu.events import FaultApplied, FaultEnded, FaultStarted
from falemu.scaling.controller import StartFault
from falemu.scaling.policy import SERVING_STATES

if TYPE_CHECKING:
    from falemu.emulator import Emulator
    from falemu.scaling.controller import AppController

CONTROLLER_KINDS = frozenset({"starts", "data", "kill"})


class Chaos:
    """The faults of one emulator (see the module docstring). Call its methods on the emulator's loop."""

    def __init__(self, emulator: Emulator) -> None:
        self.emulator = emulator
        self.schedule = FaultSchedule()
        self._request_apps: frozenset[str] = frozenset()
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False
        self._lifted: set[str] = set()  # starts faults whose back-off was lifted

    # -- faults ----------------------------------------------------------------------------------------

    def add(self, spec: FaultSpec) -> Fault:
        """Put a fault in effect now."""
        if self._closed:
            raise UsageError("falemu is stopping", hint="start it again")
        alias = self._alias(spec.app)
        spec = replace(spec, app=alias)
        controller = self.emulator.controller(alias)
        if spec.kind == "data" and self.emulator.runtime.name != "docker":
            raise UsageError(
                f"the {self.emulator.runtime.name} runtime cannot make /data read-only or full",
                hint="data faults need the docker runtime (a bind mount option or a tmpfs per runner)",
            )
        if spec.kind == "kill" and spec.runner is not None:
            known = [r.id for r in controller.runners() if r.state in ("IDLE", "RUNNING", "DRAINING")]
            if spec.runner not in known:
                raise UsageError(
                    f"{alias} has no live runner {spec.runner}",
                    hint=f"live runners: {', '.join(known) or 'none'} (`falemu ps`)",
                )
        fault = self.schedule.add(spec, self.emulator.clock.now())
        self.emulator.events(
            FaultStarted(alias, fault=fault.id, fault_kind=spec.kind, description=spec.describe(), spec=spec.to_dict())
        )
        if spec.kind == "kill" and spec.runner is not None:
            fault.targets.append(spec.runner)
            self._kill(controller, spec.runner, fault, "")
            self._ended(self.schedule.use(fault))
        elif spec.kind == "data":
            self._recycle(controller, spec.runners, "fault")
        self._rewire()
        self._arm()
        return fault

    def clear(self, fault_id: str | None = None, app: str | None = None) -> list[Fault]:
        """End faults now: one by id, those of an app, or all. Lifts back-offs their failed starts caused."""
        alias = self._alias(app) if app is not None else None
        if fault_id is not None and fault_id not in self.schedule.faults:
            raise UsageError(f"no fault {fault_id}", hint="`falemu chaos list` shows them")
        ended = []
        for fault in self.schedule.active(alias):
            if fault_id is None or fault.id == fault_id:
                ended.append(fault)
                fault.ended = "cleared"
        self._ended(ended)
        # The back-off that injected failed starts caused goes too (also when their count ran out before).
        for fault in list(self.schedule.faults.values()):
            if fault.kind != "starts" or fault.id in self._lifted or not fault.applied:
                continue
            if (fault_id is None or fault.id == fault_id) and (alias is None or fault.app == alias):
                self._lifted.add(fault.id)
                self.emulator.controller(fault.app).reset_backoff()
        self._rewire()
        return ended

    def rows(self, *, include_ended: bool = True) -> list[dict[str, Any]]:
        now = self.emulator.clock.now()
        return [f.row(now) for f in self.schedule.faults.values() if include_ended or f.ended is None]

    def close(self) -> None:
        """End every fault (falemu stops)."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for fault in self.schedule.active():
            fault.ended = "shutdown"
            self._say_ended(fault)
        self._request_apps = frozenset()
        gateway = self.emulator.gateway
        if gateway is not None:
            gateway.faults = None

    # -- gateway hooks ---------------------------------------------------------------------------------

    def intercepts(self, alias: str) -> bool:
        """A request fault of this app is in effect (the fast path leaves such requests to the ASGI path)."""
        return alias in self._request_apps

    def on_request(self, alias: str, request_id: str) -> RequestPlan | None:
        plan = self.schedule.for_request(alias, self.emulator.clock.now())
        if plan is None:
            return None
        for fault in plan.hit:
            self.emulator.events(
                FaultApplied(
                    alias, fault=fault.id, fault_kind=fault.kind, target=request_id, detail=fault.spec.describe()
                )
            )
        if plan.ended:
            self._ended(list(plan.ended))
            self._rewire()
        return plan

    # -- controller hooks ------------------------------------------------------------------------------

    def on_start(self, app: str, runner_id: str) -> StartFault | None:
        plan = self.schedule.for_start(app, runner_id, self.emulator.clock.now())
        if plan is None:
            return None
        for fault in plan.hit:
            if fault.kind == "data":
                detail = f"/data {fault.spec.mode}"
            elif fault.spec.mode == "fail":
                detail = "start fails"
            else:
                detail = f"start {fault.spec.delay or 0:g} s slower"
            self.emulator.events(
                FaultApplied(app, fault=fault.id, fault_kind=fault.kind, target=runner_id, detail=detail)
            )
        if plan.ended:
            self._ended(list(plan.ended))
            self._rewire()
        error = None
        if plan.fail is not None:
            error = RunnerError(
                f"runner {runner_id} of {app} failed during setup(): RuntimeError raised by fault {plan.fail.id} "
                "(falemu chaos)",
                error_type="runner_scheduling_failure",
                logs="Traceback (most recent call last):\n"
                f"RuntimeError: setup() failed (fault {plan.fail.id}, falemu chaos)",
                hint="an injected fault; `falemu chaos clear` ends it",
            )
        return StartFault(error=error, delay=plan.delay, data_mode=plan.data_mode)

    def on_lease(self, controller: AppController, runner_id: str, request_id: str) -> None:
        fault, ended = self.schedule.for_lease(controller.name, runner_id, self.emulator.clock.now())
        if fault is not None:
            loop = asyncio.get_running_loop()
            after = fault.spec.after
            if after > 0:
                loop.call_later(after, self._kill, controller, runner_id, fault, request_id)
            else:
                loop.call_soon(self._kill, controller, runner_id, fault, request_id)
        if ended:
            self._ended(ended)
            self._rewire()

    # -- internals -------------------------------------------------------------------------------------

    def _alias(self, app: str) -> str:
        for name, config in self.emulator.configs.items():
            if app in (name, config.alias):
                return config.alias
        raise UsageError(f"no app {app} in this falemu up", hint=f"apps: {', '.join(self.emulator.apps)}")

    def _kill(self, controller: AppController, runner_id: str, fault: Fault, request_id: str) -> None:
        serving = f" while it served request {request_id}" if request_id else ""
        reason = f"killed by fault {fault.id} (falemu chaos){serving}"
        detail = f"killed{serving}" if controller.kill(runner_id, reason) else "already gone"
        self.emulator.events(
            FaultApplied(controller.name, fault=fault.id, fault_kind="kill", target=runner_id, detail=detail)
        )

    def _recycle(self, controller: AppController, count: int, reason: str, runners: list[str] | None = None) -> None:
        """Replace runners (idle ones first), so the next starts pick up a data fault's /data, or leave it."""
        infos = [r for r in controller.runners() if r.revision == controller.revision and r.state in SERVING_STATES]
        if runners is not None:
            infos = [r for r in infos if r.id in runners]
        infos.sort(key=lambda r: (r.in_flight, r.started_at))
        chosen = [r.id for r in infos[:count]]
        if not chosen:
            return
        live = controller.live
        controller.retire(chosen, reason)
        controller.warm(live)

    def _ended(self, faults: list[Fault]) -> None:
        for fault in faults:
            self._say_ended(fault)
            if fault.kind == "data" and fault.targets:
                controller = self.emulator.controller(fault.app)
                self._recycle(controller, len(fault.targets), "fault_ended", runners=list(fault.targets))
        self.schedule.forget_ended()
        self._arm()

    def _say_ended(self, fault: Fault) -> None:
        self.emulator.events(
            FaultEnded(
                fault.app, fault=fault.id, fault_kind=fault.kind, reason=fault.ended or "", applied=fault.applied
            )
        )

    def _rewire(self) -> None:
        """Hooks on where a fault is in effect, off (None) everywhere else."""
        active = self.schedule.active()
        self._request_apps = frozenset(f.app for f in active if f.kind in REQUEST_KINDS)
        gateway = self.emulator.gateway
        if gateway is not None:
            gateway.faults = self if self._request_apps else None
        hooked = {f.app for f in active if f.kind in CONTROLLER_KINDS}
        for config in self.emulator.configs.values():
            controller = self.emulator.controller(config.alias)
            controller.faults = self if config.alias in hooked else None

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        deadline = self.schedule.next_deadline()
        if deadline is None or self._closed:
            return
        delay = max(0.0, deadline - self.emulator.clock.now())
        self._timer = asyncio.get_running_loop().call_later(delay, self._expire)

    def _expire(self) -> None:
        self._timer = None
        ended = self.schedule.expire(self.emulator.clock.now())
        self._ended(ended)
        self._rewire()
        self._arm()
