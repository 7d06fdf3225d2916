"""Jinja2 templates for automations: sandboxed, bounded in time and in size.

Why a sandbox and a time limit: automations are written by site admins in a web UI, so a
template is untrusted input that runs inside the hub. `SandboxedEnvironment` stops attribute
tricks (`__class__.__mro__`); it does not stop `{% for i in range(10**5) %}{% for j in
range(10**5) %}` from burning the event loop for an hour.

How the time limit is enforced: every render runs in a dedicated worker thread (never on the
event loop). The caller awaits it with a timeout; when the timeout expires the thread is sent
`TemplateTimeout` asynchronously (`PyThreadState_SetAsyncExc`), which Python raises at the
next bytecode boundary of that thread, so a pure-Python loop in the compiled template stops
within milliseconds and the thread is free again. Results that would explode memory
(`'x' * 10**9`, `10 ** 10**9`) are refused by intercepting `*` and `**` before they run.

Templates see `states('sensor.x')`, `state_attr(id, name)`, `is_state(id, value)`,
`now()` (timezone-aware, in the hub's `time_zone`; UTC when no zone is given), the
automation's variables and `trigger`. Entity ids read through `states()` are
recorded, so a template trigger is indexed by exactly the entities its template reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import operator
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime, tzinfo
from typing import Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment

DEFAULT_TIME_LIMIT = 1.0
MAX_RESULT = 100_000  # characters or items a `*` may produce


class TemplateError(Exception):
    """A template that does not compile or fails while rendering; the message says why."""


class TemplateTimeout(TemplateError):
    """Raised inside the rendering thread when the time limit expires."""


StateGetter = Callable[[str], Any]


class _BoundedSandbox(SandboxedEnvironment):
    """A sandbox whose `*` and `**` refuse results too big to be anything but an attack."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Any, operator_: str, left: Any, right: Any) -> Any:
        if operator_ == "**":
            if isinstance(right, int | float) and abs(right) > 100 and not (
                isinstance(left, int | float) and abs(left) <= 1
            ):
                raise TemplateError(f"exponent {right} is too large")
            return operator.pow(left, right)
        if (isinstance(left, str | list | tuple) and isinstance(right, int)
                and len(left) * right > MAX_RESULT) or (
                isinstance(right, str | list | tuple) and isinstance(left, int)
                and len(right) * left > MAX_RESULT):
            raise TemplateError("result of * is too large")
        return operator.mul(left, right)


_ENV = _BoundedSandbox(undefined=jinja2.StrictUndefined, autoescape=False)
_CACHE: dict[str, jinja2.Template] = {}
_EXECUTOR = ThreadPoolExecutor(max_workers=4, thread_name_prefix="automation-template")


def is_template(value: Any) -> bool:
    return isinstance(value, str) and ("{{" in value or "{%" in value)


def compile_template(text: str) -> jinja2.Template:
    """Compile once (cached); a syntax error becomes TemplateError naming the line."""
    found = _CACHE.get(text)
    if found is None:
        try:
            found = _ENV.from_string(text)
        except jinja2.TemplateSyntaxError as err:
            raise TemplateError(f"template syntax error on line {err.lineno}: {err.message}") from err
        if len(_CACHE) > 2000:
            _CACHE.clear()
        _CACHE[text] = found
    return found


def validate_template(value: Any) -> str:
    """voluptuous validator: a template must at least compile."""
    import voluptuous as vol

    text = str(value)
    try:
        compile_template(text)
    except TemplateError as err:
        raise vol.Invalid(str(err)) from None
    return text


class _StateProxy:
    """What `states.sensor.x` and `states('sensor.x')` read, recording every entity touched."""

    def __init__(self, getter: StateGetter, seen: set[str]) -> None:
        self._getter = getter
        self._seen = seen

    def __call__(self, entity_id: str) -> str:
        self._seen.add(entity_id)
        state = self._getter(entity_id)
        return "unknown" if state is None else state.state


def _context(getter: StateGetter, variables: Mapping[str, Any], seen: set[str],
             now: float | None, zone: tzinfo | None) -> dict[str, Any]:
    proxy = _StateProxy(getter, seen)

    def state_attr(entity_id: str, name: str) -> Any:
        seen.add(entity_id)
        state = getter(entity_id)
        return None if state is None else state.attributes.get(name)

    def is_state(entity_id: str, value: Any) -> bool:
        return proxy(entity_id) == str(value)

    def now_() -> datetime:
        # the hub's zone: `now().hour` is what the site's clock on the wall says
        return datetime.fromtimestamp(time.time() if now is None else now, zone or UTC)

    return {**variables, "states": proxy, "state_attr": state_attr, "is_state": is_state,
            "now": now_}


def _raise_in(thread_id: int) -> None:
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id),
                                               ctypes.py_object(TemplateTimeout))


def _render_in_thread(template: jinja2.Template, ctx: dict[str, Any],
                      ident: Future[int]) -> str:
    ident.set_result(threading.get_ident())
    return template.render(ctx)


class RenderResult:
    """The text a template produced and the entities it read."""

    __slots__ = ("entities", "text")

    def __init__(self, text: str, entities: set[str]) -> None:
        self.text = text
        self.entities = entities


async def async_render(text: str, getter: StateGetter, variables: Mapping[str, Any],
                       time_limit: float = DEFAULT_TIME_LIMIT,
                       now: float | None = None, zone: tzinfo | None = None) -> RenderResult:
    """Render `text` in a worker thread, stopping it after `time_limit` seconds."""
    template = compile_template(text)
    seen: set[str] = set()
    ctx = _context(getter, variables, seen, now, zone)
    ident: Future[int] = Future()
    loop = asyncio.get_running_loop()
    future = loop.run_in_executor(_EXECUTOR, _render_in_thread, template, ctx, ident)
    try:
        result = await asyncio.wait_for(asyncio.shield(future), time_limit)
    except TimeoutError:
        if ident.done():
            _raise_in(ident.result())
        with contextlib.suppress(BaseException):  # TemplateTimeout, expected
            await future  # the thread stops at its next bytecode
        raise TemplateTimeout(
            f"template took longer than {time_limit:g} s and was stopped"
        ) from None
    except TemplateError:
        raise
    except jinja2.UndefinedError as err:
        raise TemplateError(f"undefined: {err.message}") from err
    except jinja2.TemplateError as err:
        raise TemplateError(str(err)) from err
    except Exception as err:
        raise TemplateError(f"{type(err).__name__}: {err}") from err
    return RenderResult(result, seen)


def truthy(text: str) -> bool:
    """How a rendered condition reads: `true`, `on`, `yes`, or a non-zero number."""
    value = text.strip().lower()
    if value in ("true", "on", "yes", "1"):
        return True
    try:
        return float(value) != 0
    except ValueError:
        return False


async def async_render_data(data: Any, getter: StateGetter, variables: Mapping[str, Any],
                            time_limit: float = DEFAULT_TIME_LIMIT,
                            now: float | None = None, zone: tzinfo | None = None) -> Any:
    """Render every template string inside a structure (service data, messages)."""
    if isinstance(data, str):
        if not is_template(data):
            return data
        return (await async_render(data, getter, variables, time_limit, now, zone)).text
    if isinstance(data, Mapping):
        return {k: await async_render_data(v, getter, variables, time_limit, now, zone)
                for k, v in data.items()}
    if isinstance(data, list):
        return [await async_render_data(v, getter, variables, time_limit, now, zone)
                for v in data]
    return data
