"""EventBus: how listeners run, filtering, unsubscribing, isolation and cross-thread firing."""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from typing import Any

import pytest

from hub.core import events as events_mod
from hub.core.context import Context
from hub.core.events import (
    EVENT_STATE_REPORTED,
    MATCH_ALL,
    Event,
    EventBus,
    Job,
    JobType,
    callback,
)

from .helpers import record


async def test_callback_listener_runs_inline(bus: EventBus) -> None:
    seen: list[Event] = []

    @callback
    def listener(event: Event) -> None:
        seen.append(event)

    bus.listen("reading", listener)
    fired = bus.async_fire("reading", {"value": 1})
    # No await between fire and assert: a callback must already have run.
    assert seen == [fired]
    assert seen[0].data == {"value": 1}


async def test_coroutine_listener_is_scheduled_not_run_inline(bus: EventBus) -> None:
    seen: list[Event] = []

    async def listener(event: Event) -> None:
        seen.append(event)

    bus.listen("reading", listener)
    tasks_before = len(asyncio.all_tasks())
    fired = bus.async_fire("reading")
    assert seen == []
    assert len(asyncio.all_tasks()) == tasks_before + 1
    await bus.async_drain()
    assert seen == [fired]


async def test_plain_function_runs_in_executor_off_the_loop(bus: EventBus) -> None:
    threads: list[int] = []

    def blocking_listener(event: Event) -> None:
        threads.append(threading.get_ident())

    bus.listen("reading", blocking_listener)
    bus.async_fire("reading")
    await bus.async_drain()
    assert len(threads) == 1
    assert threads[0] != threading.get_ident()


def test_job_type_is_decided_from_the_function() -> None:
    @callback
    def cb(event: Event) -> None: ...

    async def coro(event: Event) -> None: ...

    def plain(event: Event) -> None: ...

    assert Job(cb).job_type is JobType.CALLBACK
    assert Job(coro).job_type is JobType.COROUTINE
    assert Job(plain).job_type is JobType.EXECUTOR
    # Partials are looked through, so wrapping a listener does not change how it runs.
    assert Job(functools.partial(functools.partial(coro))).job_type is JobType.COROUTINE
    assert Job(functools.partial(cb)).job_type is JobType.CALLBACK
    assert Job(plain).name.endswith("plain")


async def test_job_type_is_decided_once_not_per_event(
    bus: EventBus, monkeypatch: pytest.MonkeyPatch
) -> None:
    inspections = 0
    real_is_callback = events_mod.is_callback

    def counting_is_callback(func: Any) -> bool:
        nonlocal inspections
        inspections += 1
        return real_is_callback(func)

    monkeypatch.setattr(events_mod, "is_callback", counting_is_callback)
    recorder = record(bus, "reading")
    after_subscribe = inspections
    assert after_subscribe > 0
    for value in range(5):
        bus.async_fire("reading", {"value": value})
    assert len(recorder.events) == 5
    assert inspections == after_subscribe


async def test_filter_runs_before_any_work_is_scheduled(bus: EventBus) -> None:
    filtered: list[str] = []
    seen: list[str] = []

    @callback
    def only_arcm_1(event: Event) -> bool:
        filtered.append(event.data["entity_id"])
        return event.data["entity_id"] == "sensor.arcm_1_power"

    async def listener(event: Event) -> None:
        seen.append(event.data["entity_id"])

    bus.listen("state_changed", listener, event_filter=only_arcm_1)
    tasks_before = len(asyncio.all_tasks())
    bus.async_fire("state_changed", {"entity_id": "sensor.arcm_2_power"})
    # The filter ran inline and rejected: no task was created for the foreign event.
    assert filtered == ["sensor.arcm_2_power"]
    assert len(asyncio.all_tasks()) == tasks_before
    bus.async_fire("state_changed", {"entity_id": "sensor.arcm_1_power"})
    assert len(asyncio.all_tasks()) == tasks_before + 1
    await bus.async_drain()
    assert seen == ["sensor.arcm_1_power"]


async def test_non_callback_filter_is_rejected(bus: EventBus) -> None:
    def not_marked(event: Event) -> bool:
        return True

    async def async_filter(event: Event) -> bool:
        return True

    with pytest.raises(ValueError, match="@callback"):
        bus.listen("reading", record(bus, "other").__call__, event_filter=not_marked)
    with pytest.raises(ValueError, match="@callback"):
        bus.listen("reading", record(bus, "other").__call__, event_filter=async_filter)
    assert "reading" not in bus.listener_count()


async def test_raising_filter_is_logged_and_others_still_run(
    bus: EventBus, caplog: pytest.LogCaptureFixture
) -> None:
    @callback
    def broken_filter(event: Event) -> bool:
        raise KeyError("entity_id")

    @callback
    def never(event: Event) -> None:
        raise AssertionError("a listener whose filter raised must not run")

    bus.listen("reading", never, event_filter=broken_filter)
    recorder = record(bus, "reading")
    with caplog.at_level(logging.ERROR, logger="hub.core.events"):
        bus.async_fire("reading")
    assert len(recorder.events) == 1
    assert bus.listener_errors == 1
    assert "never" in caplog.text


async def test_match_all_hears_every_event_type(bus: EventBus) -> None:
    everything = record(bus, MATCH_ALL)
    only_alarms = record(bus, "alarm_raised")
    bus.async_fire("alarm_raised")
    bus.async_fire("state_changed")
    bus.async_fire("call_service")
    assert everything.types == ["alarm_raised", "state_changed", "call_service"]
    assert only_alarms.types == ["alarm_raised"]
    assert bus.listener_count() == {MATCH_ALL: 1, "alarm_raised": 1}


async def test_state_reported_is_not_delivered_to_match_all(bus: EventBus) -> None:
    everything = record(bus, MATCH_ALL)
    reported = record(bus, EVENT_STATE_REPORTED)
    bus.async_fire(EVENT_STATE_REPORTED, {"entity_id": "sensor.x"})
    assert reported.types == [EVENT_STATE_REPORTED]
    assert everything.types == []


async def test_unsubscribe_handle_stops_delivery_and_is_idempotent(bus: EventBus) -> None:
    recorder = record(bus, "reading")
    seen: list[Event] = []
    remove = bus.listen("reading", callback(lambda event: seen.append(event)))
    remove_all = bus.listen(MATCH_ALL, callback(lambda event: seen.append(event)))
    bus.async_fire("reading")
    assert len(seen) == 2
    remove()
    remove()  # a second call must be harmless
    remove_all()
    bus.async_fire("reading")
    assert len(seen) == 2
    assert len(recorder.events) == 2
    assert bus.listener_count() == {"reading": 1}


async def test_unsubscribe_last_listener_removes_the_event_type(bus: EventBus) -> None:
    remove = bus.listen("reading", callback(lambda event: None))
    remove()
    assert bus.listener_count() == {}


async def test_unsubscribing_inside_a_listener_does_not_skip_a_neighbour(bus: EventBus) -> None:
    calls: list[str] = []
    removers: dict[str, Any] = {}

    @callback
    def first(event: Event) -> None:
        calls.append("first")
        removers["first"]()

    @callback
    def second(event: Event) -> None:
        calls.append("second")

    @callback
    def third(event: Event) -> None:
        calls.append("third")
        removers["second"]()

    removers["first"] = bus.listen("reading", first)
    removers["second"] = bus.listen("reading", second)
    bus.listen("reading", third)
    bus.async_fire("reading")
    assert calls == ["first", "second", "third"]
    calls.clear()
    bus.async_fire("reading")
    assert calls == ["third"]


async def test_listen_once_delivers_exactly_one_event(bus: EventBus) -> None:
    seen: list[Any] = []
    bus.listen_once("hub_started", callback(lambda event: seen.append(event.data["n"])))
    bus.async_fire("hub_started", {"n": 1})
    bus.async_fire("hub_started", {"n": 2})
    assert seen == [1]
    assert bus.listener_count() == {}


async def test_listen_once_with_a_coroutine_and_cancelled_before_firing(bus: EventBus) -> None:
    seen: list[Any] = []

    async def once(event: Event) -> None:
        seen.append(event.data["n"])

    bus.listen_once("hub_started", once)
    cancelled = bus.listen_once("hub_started", callback(lambda event: seen.append("cancelled")))
    cancelled()
    bus.async_fire("hub_started", {"n": 1})
    bus.async_fire("hub_started", {"n": 2})
    await bus.async_drain()
    assert seen == [1]


async def test_raising_listener_is_logged_by_name_and_others_still_run(
    bus: EventBus, caplog: pytest.LogCaptureFixture
) -> None:
    @callback
    def exploding_listener(event: Event) -> None:
        raise RuntimeError("boom")

    async def exploding_coroutine(event: Event) -> None:
        raise RuntimeError("async boom")

    before = record(bus, "reading")
    bus.listen("reading", exploding_listener)
    bus.listen("reading", exploding_coroutine)
    after = record(bus, "reading")
    with caplog.at_level(logging.ERROR, logger="hub.core.events"):
        bus.async_fire("reading")
        await bus.async_drain()
    assert len(before.events) == 1
    assert len(after.events) == 1
    assert bus.listener_errors == 2
    messages = [r.getMessage() for r in caplog.records]
    assert any("exploding_listener" in m and "reading" in m for m in messages)
    assert any("exploding_coroutine" in m and "reading" in m for m in messages)


async def test_fire_from_another_thread_arrives_on_the_loop(bus: EventBus) -> None:
    loop = asyncio.get_running_loop()
    arrived: asyncio.Future[tuple[Event, int]] = loop.create_future()

    @callback
    def listener(event: Event) -> None:
        arrived.set_result((event, threading.get_ident()))

    bus.listen("serial_frame", listener)
    context = Context(user_id="modem")
    thread = threading.Thread(
        target=bus.fire, args=("serial_frame", {"bytes": 8}), kwargs={"context": context}
    )
    thread.start()
    event, thread_id = await asyncio.wait_for(arrived, timeout=10)
    thread.join()
    assert event.data == {"bytes": 8}
    assert event.context is context
    assert thread_id == threading.get_ident()  # ran in the loop's thread, not the caller's


async def test_fire_from_the_loop_thread_runs_inline(bus: EventBus) -> None:
    recorder = record(bus, "reading")
    bus.fire("reading")
    assert recorder.types == ["reading"]


def test_fire_before_binding_a_loop_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="not bound"):
        EventBus().fire("reading")


async def test_async_drain_waits_for_chained_listener_tasks(bus: EventBus) -> None:
    done: list[str] = []
    gate = asyncio.Event()

    async def first(event: Event) -> None:
        await gate.wait()
        bus.async_fire("second")

    async def second(event: Event) -> None:
        await asyncio.sleep(0)
        done.append("second")

    bus.listen("first", first)
    bus.listen("second", second)
    bus.async_fire("first")
    asyncio.get_running_loop().call_soon(gate.set)
    await bus.async_drain()
    assert done == ["second"]


async def test_event_defaults_and_as_dict(bus: EventBus) -> None:
    context = Context(user_id="u1")
    event = bus.async_fire("reading", {"v": 2}, context=context, time_fired=12.5)
    assert event.as_dict() == {
        "event_type": "reading",
        "data": {"v": 2},
        "origin": "local",
        "time_fired": 12.5,
        "context": context.as_dict(),
    }
    # Every event has a context, even when the caller gave none.
    assert isinstance(bus.async_fire("reading").context, Context)
