"""Running an automation's actions: one `Run` per trigger, with its Context and its Trace.

Every step is recorded in the trace. A failing step ends the run with outcome `error` (unless
it says `continue_on_error`); it never escapes the run, so one broken automation cannot stop
the engine or the others.

Delays are persisted (hub/core/automations/timers.py) with the *path* of the delay inside the
action tree, the run's variables and its Context, so a hub restarted in the middle of a
`delay: 10m` resumes the run at the step after the delay when the 10 minutes are up, instead
of forgetting it (Home Assistant forgets). Paths look like `actions/2` or
`actions/1/then/0`; resuming walks them back into sequences, `if` and `choose` branches.
A run parked in `wait_for_trigger` is persisted the same way (waits.py) and resumes in
that wait. A delay or wait inside `repeat` is not resumable (the loop state is not
persisted); the trace of the interrupted run says so.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..context import Context
from ..services import ServiceNotFound
from .conditions import EvalContext, check_all
from .templates import TemplateError, async_render_data, is_template
from .traces import (
    OUTCOME_CANCELLED,
    OUTCOME_CONDITION_FALSE,
    OUTCOME_ERROR,
    OUTCOME_FIRED,
    OUTCOME_STOPPED,
    Trace,
)

if TYPE_CHECKING:
    from .engine import Automation, AutomationEngine
    from .waits import TriggerWait

_LOGGER = logging.getLogger(__name__)
MAX_LOOP = 10_000
EVENT_AUTOMATION_DELAY = "automation_delay"
EVENT_AUTOMATION_WAIT = "automation_wait"


class StopRun(Exception):
    def __init__(self, reason: str, error: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.error = error


class ConditionFailed(Exception):
    """A `condition` used as an action was false: the run ends quietly (as in HA)."""


class Run:
    """One execution of an automation."""

    def __init__(self, engine: AutomationEngine, automation: Automation,
                 trigger: dict[str, Any], trigger_context: Context | None,
                 variables: dict[str, Any] | None = None, trace: Trace | None = None) -> None:
        self.engine = engine
        self.automation = automation
        parent = trigger_context.id if trigger_context is not None else None
        # Each run has its own Context, a child of what triggered it: the audit chain.
        self.context = Context(parent_id=parent)
        self.variables: dict[str, Any] = {**automation.conf.get("variables", {}),
                                          **(variables or {}), "trigger": trigger,
                                          "this": {"id": automation.id}}
        self.trace = trace or Trace(automation.id, trigger, self.context.as_dict())
        self.timer_keys: list[str] = []
        #: the persisted wait this run resumes in (a `wait` row's data), see `resume`
        self.resume_wait: dict[str, Any] | None = None
        #: that wait, listening since the engine's start (engine._resume_run)
        self.pending_wait: TriggerWait | None = None
        #: where the run is (`conditions`, `actions`) or the step that failed, for errors
        self.where = "conditions"
        self.failed_at: str | None = None

    # -- helpers ------------------------------------------------------------------------------
    def eval_context(self) -> EvalContext:
        engine = self.engine
        return EvalContext(engine.get_state, engine.clock(), self.variables, engine.zone,
                           engine.device_project, engine.time_limit,
                           project_lineage=engine.project_lineage)

    async def render(self, value: Any) -> Any:
        """Templates inside `value`, with `now()` read from the engine's clock (a dry run's
        replayed moment, see dryrun.py)."""
        return await async_render_data(value, self.engine.get_state, self.variables,
                                       self.engine.time_limit, now=self.engine.clock(),
                                       zone=self.engine.zone)

    # -- the run --------------------------------------------------------------------------------
    async def execute(self, resume: list[Any] | None = None, deadline: float | None = None,
                      check_conditions: bool = True) -> Trace:
        """Conditions, then actions; always finishes the trace, never raises (but cancel)."""
        trace = self.trace
        try:
            await self._render_variables()
            if check_conditions and resume is None:
                ctx = self.eval_context()
                ok = await check_all(self.automation.conf["conditions"], ctx, "conditions")
                trace.conditions = ctx.results
                if not ok:
                    trace.finish(OUTCOME_CONDITION_FALSE)
                    return trace
            if self.pending_wait is None:  # a resumed wait listens first, acts after
                await self.engine.wait_ready()
            self.where = "actions"
            if resume is None:
                await self.sequence(self.automation.conf["actions"], "actions")
            else:
                await self.resume(self.automation.conf["actions"], "actions", resume, deadline)
            trace.finish(OUTCOME_FIRED)
        except StopRun as stop:
            trace.finish(OUTCOME_ERROR if stop.error else OUTCOME_STOPPED, stop.reason)
        except ConditionFailed:
            trace.finish(OUTCOME_FIRED)
            trace.notes.append("a condition step was false; the remaining steps did not run")
        except asyncio.CancelledError:
            trace.finish(OUTCOME_CANCELLED, "cancelled (mode restart, disabled or hub stopping)")
            raise
        except Exception as err:  # noqa: BLE001 - reported in the trace, never kills the engine
            # the error names the automation and the step: "which one broke, and where?"
            cause = f"template: {err}" if isinstance(err, TemplateError) else (
                f"{type(err).__name__}: {err}")
            message = f"automation '{self.automation.id}' {self.failed_at or self.where}: {cause}"
            _LOGGER.warning("%s", message)
            trace.finish(OUTCOME_ERROR, message)
        finally:
            if self.pending_wait is not None:  # resumed, but ended before it waited again
                self.pending_wait.close()
                self.pending_wait = None
        return trace

    async def _render_variables(self) -> None:
        for key, value in self.automation.conf.get("variables", {}).items():
            self.variables[key] = await self.render(value)

    async def sequence(self, actions: list[Mapping[str, Any]], path: str, start: int = 0) -> None:
        for index in range(start, len(actions)):
            await self.step(actions[index], f"{path}/{index}")

    async def resume(self, actions: list[Mapping[str, Any]], path: str, where: list[Any],
                     deadline: float | None) -> None:
        """Continue a run interrupted by a restart: `where` is the rest of the delay's path."""
        index = int(where[0])
        action = actions[index] if index < len(actions) else {}
        if len(where) == 1 and "wait_for_trigger" in action and self.resume_wait is not None:
            await self._wait(action, f"{path}/{index}", self.resume_wait)
            await self.sequence(actions, path, index + 1)
            return
        if len(where) == 1 and "delay" in action:  # wait out what is left, then go on
            step = self.trace.step(f"{path}/{index}", "delay", resumed=True)
            remaining = max(0.0, (deadline or 0) - self.engine.clock())
            step["remaining"] = remaining
            await self._sleep_persisted(remaining, f"{path}/{index}", deadline)
            await self.sequence(actions, path, index + 1)
            return
        if len(where) == 1:
            raise StopRun(f"cannot resume at {path}/{index}: the automation was edited while "
                          "the hub was down", True)
        branch = where[1]
        here = f"{path}/{index}"
        if "if" in action:
            await self.resume(action[branch], f"{here}/{branch}", where[2:], deadline)
        elif "choose" in action:
            if branch == "default":
                await self.resume(action["default"], f"{here}/default", where[2:], deadline)
            else:
                option = action["choose"][int(where[2])]
                await self.resume(option["sequence"], f"{here}/choose/{where[2]}/sequence",
                                  where[4:], deadline)
        else:
            raise StopRun(f"cannot resume inside {here}", True)
        await self.sequence(actions, path, index + 1)

    async def step(self, action: Mapping[str, Any], path: str) -> None:
        if not action.get("enabled", True):
            self.trace.step(path, "disabled")
            return
        try:
            await self._step(action, path)
        except (StopRun, ConditionFailed, asyncio.CancelledError):
            raise
        except Exception as err:
            if action.get("continue_on_error"):
                self.trace.step(path, "error_ignored", error=f"{type(err).__name__}: {err}")
                return
            self.trace.step(path, "error", error=f"{type(err).__name__}: {err}")
            self.failed_at = self.failed_at or path  # the innermost step, recorded first
            raise

    async def _step(self, action: Mapping[str, Any], path: str) -> None:
        trace = self.trace
        if "action" in action:
            await self._call(action, path)
        elif "delay" in action:
            seconds = action["delay"]
            if is_template(seconds):
                from ..config import duration

                seconds = duration((await self.render(seconds)).strip())
            trace.step(path, "delay", seconds=seconds)
            deadline = self.engine.clock() + float(seconds)
            await self._sleep_persisted(float(seconds), path, deadline)
        elif "wait_for_trigger" in action:
            await self._wait(action, path)
        elif "choose" in action:
            for number, option in enumerate(action["choose"]):
                ctx = self.eval_context()
                if await check_all(option["conditions"], ctx, f"{path}/choose/{number}/conditions"):
                    trace.step(path, "choose", chosen=number, conditions=ctx.results)
                    await self.sequence(option["sequence"], f"{path}/choose/{number}/sequence")
                    return
            trace.step(path, "choose", chosen="default" if "default" in action else None)
            if "default" in action:
                await self.sequence(action["default"], f"{path}/default")
        elif "if" in action:
            ctx = self.eval_context()
            ok = await check_all(action["if"], ctx, f"{path}/if")
            trace.step(path, "if", result=ok, conditions=ctx.results)
            if ok:
                await self.sequence(action["then"], f"{path}/then")
            elif "else" in action:
                await self.sequence(action["else"], f"{path}/else")
        elif "repeat" in action:
            await self._repeat(action["repeat"], path)
        elif "variables" in action:
            for key, value in action["variables"].items():
                self.variables[key] = await self.render(value)
            trace.step(path, "variables", names=sorted(action["variables"]))
        elif "stop" in action:
            trace.step(path, "stop", reason=action["stop"], error=action.get("error", False))
            raise StopRun(action["stop"], bool(action.get("error")))
        elif "condition_action" in action:
            ctx = self.eval_context()
            ok = await check_all([action["condition_action"]], ctx, path)
            trace.step(path, "condition", result=ok)
            if not ok:
                raise ConditionFailed()

    async def _wait(self, action: Mapping[str, Any], path: str,
                    resumed: Mapping[str, Any] | None = None) -> None:
        """Wait (persisted unless inside `repeat`); `resumed`: the row of a wait that a
        restart interrupted, continued with its own triggers, holds and deadline."""
        if resumed is None:
            confs = [await self._bind_alarm_id(conf) for conf in action["wait_for_trigger"]]
            timeout = action.get("timeout")
            started_at = self.engine.clock()
            timeout_at = None if timeout is None else started_at + float(timeout)
        else:
            confs = list(resumed["confs"])
            timeout_at, started_at = resumed.get("timeout_at"), float(resumed["started_at"])
            self.trace.step(path, "wait_for_trigger_resumed", timeout_at=timeout_at,
                            holds=len(resumed.get("holds") or ()))
        result = await self.engine.wait_for_trigger(
            confs, timeout_at,
            # told once the wait listens (and its row is queued): nothing is missed from then
            lambda: self.engine.hub.bus.async_fire(EVENT_AUTOMATION_WAIT, {
                "automation_id": self.automation.id, "run_id": self.trace.run_id,
                "path": path, "timeout_at": timeout_at}, context=self.context),
            run=self if "/repeat/" not in path else None, path=path, started_at=started_at,
            resumed=resumed)
        self.variables["wait"] = {"trigger": result}
        self.trace.step(path, "wait_for_trigger", triggered=result is not None)
        await self.engine.wait_ready()  # a resumed wait may end before plugins set up
        if result is None and not action.get("continue_on_timeout", True):
            raise StopRun("wait_for_trigger timed out", False)

    async def _bind_alarm_id(self, conf: Mapping[str, Any]) -> Mapping[str, Any]:
        """An alarm trigger's templated `alarm_id`, rendered with this run's variables."""
        value = conf.get("alarm_id")
        if conf.get("trigger") != "alarm" or not isinstance(value, str):
            return conf
        rendered = await self.render(value)
        try:
            ids = [int(item) for item in (rendered if isinstance(rendered, list) else [rendered])]
        except (TypeError, ValueError) as err:
            raise ValueError(f"alarm_id rendered to {rendered!r}, not alarm ids") from err
        return {**conf, "alarm_id": ids}

    async def _call(self, action: Mapping[str, Any], path: str) -> None:
        domain, service = action["action"].split(".", 1)
        services = self.engine.hub.services
        if not services.has_service(domain, service):
            if action.get("if_missing") == "skip":
                self.trace.step(path, "call_service", service=action["action"], skipped=True,
                                note=f"service {action['action']} is not registered: skipped")
                return
            raise ServiceNotFound(domain, service)
        data = dict(await self.render(action.get("data", {})))
        data.update(await self.render(action.get("target", {})))
        entry = self.trace.step(path, "call_service", service=action["action"], data=data)
        response = await self._invoke(domain, service, data)
        entry["response"] = _json_safe(response)
        if action.get("response_variable"):
            self.variables[action["response_variable"]] = response

    async def _invoke(self, domain: str, service: str, data: dict[str, Any]) -> Any:
        """The one place a run acts on the world (a dry run records instead)."""
        return await self.engine.hub.services.async_call(domain, service, data,
                                                         context=self.context,
                                                         return_response=True)

    async def _repeat(self, conf: Mapping[str, Any], path: str) -> None:
        trace = self.trace
        if "count" in conf:
            count = conf["count"]
            if is_template(count):
                count = int(float(await self.render(count)))
            for index in range(min(int(count), MAX_LOOP)):
                self.variables["repeat"] = {"index": index + 1, "first": index == 0,
                                            "last": index == int(count) - 1}
                await self.sequence(conf["sequence"], f"{path}/repeat/sequence")
            trace.step(path, "repeat", iterations=int(count))
            return
        for index in range(MAX_LOOP):
            self.variables["repeat"] = {"index": index + 1, "first": index == 0}
            if "while" in conf:
                ctx = self.eval_context()
                if not await check_all(conf["while"], ctx, f"{path}/repeat/while"):
                    trace.step(path, "repeat", iterations=index)
                    return
            await self.sequence(conf["sequence"], f"{path}/repeat/sequence")
            if "until" in conf:
                ctx = self.eval_context()
                if await check_all(conf["until"], ctx, f"{path}/repeat/until"):
                    trace.step(path, "repeat", iterations=index + 1)
                    return
        raise StopRun(f"repeat at {path} ran {MAX_LOOP} times without ending", True)

    async def _sleep_persisted(self, seconds: float, path: str, deadline: float | None) -> None:
        """Sleep, with the deadline in the database while sleeping (resumable after restart)."""
        resumable = "/repeat/" not in path
        key = None
        if resumable and seconds > 0:
            key = await self.engine.timers.save_delay(self, path, deadline or
                                                      self.engine.clock() + seconds)
            # told after the row is written: "this delay survives a restart from now on"
            self.engine.hub.bus.async_fire(EVENT_AUTOMATION_DELAY, {
                "automation_id": self.automation.id, "run_id": self.trace.run_id,
                "path": path, "deadline": deadline}, context=self.context)
        try:
            await asyncio.sleep(seconds)
        finally:
            # cancelled by hub stop: keep the row so the next start resumes the run
            if key is not None and not self.engine.stopping:
                await self.engine.timers.delete(key)


def _json_safe(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return str(value)
