"""StateMachine and State: entity ids, the three timestamps (as Home Assistant defines them),
the events that announce changes, and removal."""

from __future__ import annotations

from types import MappingProxyType

import pytest

from hub.core.context import Context
from hub.core.events import EVENT_STATE_CHANGED, EVENT_STATE_REPORTED, MATCH_ALL, EventBus
from hub.core.states import (
    InvalidEntityId,
    State,
    StateMachine,
    format_state,
    slugify,
    valid_entity_id,
)

from .helpers import record

T1, T2, T3, T4, T5 = 1000.0, 1001.0, 1002.0, 1003.0, 1004.0
LEAK = "sensor.arcm_1_residual_current"


@pytest.mark.parametrize(
    "entity_id",
    ["sensor.arcm_1_residual_current", "switch.arcm_1_breaker", "binary_sensor.smoke_1_smoke",
     "sensor.a", "a1.b2"],
)
def test_valid_entity_ids(entity_id: str) -> None:
    assert valid_entity_id(entity_id)


@pytest.mark.parametrize(
    "entity_id",
    ["sensor", "Sensor.x", "sensor.X", "sensor.x__y", "sensor._x", "sensor.x_", "_sensor.x",
     ".x", "sensor.", "sensor.x.y", "sensor.arcm-1", "sensor. x", "传感器.x", ""],
)
def test_invalid_entity_ids_are_rejected(states: StateMachine, entity_id: str) -> None:
    assert not valid_entity_id(entity_id)
    with pytest.raises(InvalidEntityId, match="Invalid entity id"):
        states.async_set(entity_id, 1)
    with pytest.raises(InvalidEntityId):
        State(entity_id, "1")
    assert states.get(entity_id) is None


def test_slugify_makes_device_ids_into_object_ids() -> None:
    assert slugify("arcm-1") == "arcm_1"
    assert slugify(" AFD--2.b ") == "afd_2_b"
    assert slugify("配电箱") == "unnamed"


@pytest.mark.parametrize(
    ("value", "text"),
    [(True, "on"), (False, "off"), (None, "unknown"), (1.50, "1.5"), (2.0, "2"), (300, "300"),
     (0.1 + 0.2, "0.3"), ("tripped", "tripped")],
)
def test_format_state(value: object, text: str) -> None:
    assert format_state(value) == text


def test_first_write_sets_all_three_timestamps_and_fires(
    bus: EventBus, states: StateMachine
) -> None:
    changed = record(bus, EVENT_STATE_CHANGED)
    state = states.async_set(LEAK, 12, {"unit_of_measurement": "mA"}, timestamp=T1)
    assert (state.state, state.last_changed, state.last_updated, state.last_reported) == (
        "12", T1, T1, T1)
    assert state.attributes == {"unit_of_measurement": "mA"}
    assert states.get(LEAK) is state
    [event] = changed.events
    assert event.data == {"entity_id": LEAK, "old_state": None, "new_state": state}
    assert event.time_fired == T1


def test_new_attributes_with_the_same_value_move_last_updated_only(
    bus: EventBus, states: StateMachine
) -> None:
    first = states.async_set(LEAK, 12, {"unit_of_measurement": "mA"}, timestamp=T1)
    changed = record(bus, EVENT_STATE_CHANGED)
    second = states.async_set(LEAK, 12, {"unit_of_measurement": "mA", "phase": "A"}, timestamp=T2)
    assert second is not first
    assert second.last_changed == T1
    assert second.last_updated == T2
    assert second.last_reported == T2
    [event] = changed.events
    assert event.data["old_state"] is first
    assert event.data["new_state"] is second


def test_identical_write_moves_last_reported_only_and_fires_no_state_changed(
    bus: EventBus, states: StateMachine
) -> None:
    states.async_set(LEAK, 12, {"unit_of_measurement": "mA"}, timestamp=T1)
    second = states.async_set(LEAK, 12, {"unit_of_measurement": "mA", "phase": "A"}, timestamp=T2)
    changed = record(bus, EVENT_STATE_CHANGED)
    everything = record(bus, MATCH_ALL)
    # Same value and same attributes, given explicitly or left out (None keeps them).
    third = states.async_set(LEAK, 12, {"unit_of_measurement": "mA", "phase": "A"}, timestamp=T3)
    fourth = states.async_set(LEAK, "12", timestamp=T4)
    assert third is second and fourth is second
    assert (second.last_changed, second.last_updated, second.last_reported) == (T1, T2, T4)
    assert changed.events == []
    assert everything.events == []


def test_state_reported_is_fired_when_listened_to(bus: EventBus, states: StateMachine) -> None:
    states.async_set(LEAK, 0, timestamp=T1)
    reported = record(bus, EVENT_STATE_REPORTED)
    context = Context(user_id="poller")
    states.async_set(LEAK, 0, timestamp=T2, context=context)
    states.async_set(LEAK, 0, timestamp=T3)
    first, second = reported.events
    assert first.data["entity_id"] == LEAK
    assert first.data["new_state"] is states.get(LEAK)
    assert first.data["old_last_reported"] == T1
    assert second.data["old_last_reported"] == T2
    assert first.context is context
    assert first.time_fired == T2


def test_state_reported_is_not_fired_when_nobody_listens(
    bus: EventBus, states: StateMachine, monkeypatch: pytest.MonkeyPatch
) -> None:
    states.async_set(LEAK, 0, timestamp=T1)
    fired: list[str] = []
    real_fire = bus.async_fire

    def spy(event_type: str, *args: object, **kwargs: object) -> object:
        fired.append(event_type)
        return real_fire(event_type, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(bus, "async_fire", spy)
    record(bus, MATCH_ALL)  # a catch-all listener does not count as listening for it
    states.async_set(LEAK, 0, timestamp=T2)
    assert fired == []
    assert states.get(LEAK).last_reported == T2  # type: ignore[union-attr]


def test_report_is_an_identical_write_for_the_current_state(
    bus: EventBus, states: StateMachine
) -> None:
    first = states.async_set(LEAK, 12, {"unit_of_measurement": "mA"}, timestamp=T1)
    other = states.async_set("sensor.arcm_1_temperature_1", 25.5, timestamp=T1)
    changed = record(bus, EVENT_STATE_CHANGED)
    reported = record(bus, EVENT_STATE_REPORTED)
    context = Context(user_id="poller")
    assert states.async_report([first, other], timestamp=T2, context=context) == []
    assert states.get(LEAK) is first
    assert (first.last_changed, first.last_updated, first.last_reported) == (T1, T1, T2)
    assert other.last_reported == T2
    assert changed.events == []
    event, _other = reported.events
    assert event.data == {"entity_id": LEAK, "old_last_reported": T1, "new_state": first}
    assert event.context is context and event.time_fired == T2


def test_report_without_listeners_fires_nothing(bus: EventBus, states: StateMachine) -> None:
    first = states.async_set(LEAK, 12, timestamp=T1)
    everything = record(bus, MATCH_ALL)
    assert states.async_report([first], timestamp=T2) == []
    assert first.last_reported == T2
    assert everything.events == []


def test_report_of_a_replaced_state_does_nothing(bus: EventBus, states: StateMachine) -> None:
    first = states.async_set(LEAK, 12, timestamp=T1)
    second = states.async_set(LEAK, "unavailable", timestamp=T2)
    other = states.async_set("sensor.arcm_1_temperature_1", 25.5, timestamp=T1)
    reported = record(bus, EVENT_STATE_REPORTED)
    assert states.async_report([first, other], timestamp=T3) == [first]
    assert states.get(LEAK) is second and second.last_reported == T2
    assert first.last_reported == T1 and other.last_reported == T3
    states.async_remove(LEAK)
    assert states.async_report([second], timestamp=T4) == [second]
    assert [e.data["entity_id"] for e in reported.events] == ["sensor.arcm_1_temperature_1"]


def test_a_new_value_moves_all_three(bus: EventBus, states: StateMachine) -> None:
    first = states.async_set(LEAK, 12, {"unit_of_measurement": "mA"}, timestamp=T1)
    changed = record(bus, EVENT_STATE_CHANGED)
    second = states.async_set(LEAK, 550, timestamp=T2)
    assert (second.last_changed, second.last_updated, second.last_reported) == (T2, T2, T2)
    assert second.attributes == {"unit_of_measurement": "mA"}  # None keeps the attributes
    assert changed.events[0].data["old_state"] is first
    assert first.state == "12"  # the old State object is not mutated by a change


def test_empty_attributes_clear_them(states: StateMachine) -> None:
    states.async_set(LEAK, 12, {"unit_of_measurement": "mA"}, timestamp=T1)
    cleared = states.async_set(LEAK, 12, {}, timestamp=T2)
    assert cleared.attributes == {}
    assert cleared.last_changed == T1


def test_force_update_fires_and_counts_as_a_change(bus: EventBus, states: StateMachine) -> None:
    first = states.async_set(LEAK, 12, timestamp=T1)
    changed = record(bus, EVENT_STATE_CHANGED)
    forced = states.async_set(LEAK, 12, force_update=True, timestamp=T2)
    assert forced is not first
    assert (forced.last_changed, forced.last_updated, forced.last_reported) == (T2, T2, T2)
    assert len(changed.events) == 1


def test_context_travels_with_the_state_and_the_event(bus: EventBus, states: StateMachine) -> None:
    changed = record(bus, EVENT_STATE_CHANGED)
    context = Context(user_id="alice")
    state = states.async_set("switch.arcm_1_breaker", False, context=context, timestamp=T1)
    assert state.context is context
    assert changed.events[0].context is context
    assert state.state == "off"


def test_attributes_are_read_only(states: StateMachine) -> None:
    attributes = {"unit_of_measurement": "mA"}
    state = states.async_set(LEAK, 12, attributes, timestamp=T1)
    attributes["unit_of_measurement"] = "A"  # the caller's dict is copied, not kept
    assert state.attributes["unit_of_measurement"] == "mA"
    assert isinstance(state.attributes, MappingProxyType)
    with pytest.raises(TypeError):
        state.attributes["x"] = 1  # type: ignore[index]


def test_remove_fires_with_no_new_state(bus: EventBus, states: StateMachine) -> None:
    old = states.async_set(LEAK, 12, timestamp=T1)
    states.async_set("sensor.arcm_1_power", 1.5, timestamp=T1)
    changed = record(bus, EVENT_STATE_CHANGED)
    context = Context()
    assert states.async_remove(LEAK, context=context) is True
    assert states.get(LEAK) is None
    assert changed.events[0].data == {"entity_id": LEAK, "old_state": old, "new_state": None}
    assert changed.events[0].context is context
    assert states.entity_ids("sensor") == ["sensor.arcm_1_power"]
    assert states.async_remove(LEAK) is False
    assert len(changed.events) == 1
    # A removed entity starts afresh.
    again = states.async_set(LEAK, 12, timestamp=T5)
    assert again.last_changed == T5


def test_queries_by_domain(states: StateMachine) -> None:
    states.async_set(LEAK, 12)
    states.async_set("switch.arcm_1_breaker", "on")
    states.async_set("binary_sensor.smoke_1_smoke", False)
    assert len(states) == 3
    assert sorted(states.entity_ids()) == sorted(
        [LEAK, "switch.arcm_1_breaker", "binary_sensor.smoke_1_smoke"])
    assert [s.entity_id for s in states.all("switch")] == ["switch.arcm_1_breaker"]
    assert sorted(s.entity_id for s in states.all(["switch", "sensor"])) == [
        LEAK, "switch.arcm_1_breaker"]
    assert states.all("light") == []


def test_state_helpers_and_json_form() -> None:
    state = State(LEAK, "550", {"unit_of_measurement": "mA"}, last_changed=0.0,
                  last_updated=1.5, last_reported=2.0)
    assert state.domain == "sensor" and state.object_id == "arcm_1_residual_current"
    assert state.as_float() == 550.0
    assert State("switch.x", "on").as_float() is None
    assert State("switch.x", "unavailable").available is False
    data = state.as_dict()
    assert data["last_changed"] == "1970-01-01T00:00:00+00:00"
    assert data["last_updated"] == "1970-01-01T00:00:01.500000+00:00"
    assert data["last_reported"] == "1970-01-01T00:00:02+00:00"
    assert data["attributes"] == {"unit_of_measurement": "mA"}
    # Unset timestamps default to one instant, as in Home Assistant.
    fresh = State(LEAK, "1", last_updated=5.0)
    assert fresh.last_changed == fresh.last_reported == 5.0


def test_states_of_one_entity_keep_their_own_attributes(bus: EventBus,
                                                        states: StateMachine) -> None:
    """A new value with equal attributes shares the old State's read-only mapping; neither the
    caller's dict nor a later write can change what an earlier State says."""
    attrs = {"unit_of_measurement": "mA"}
    first = states.async_set(LEAK, 12, attrs, timestamp=T1)
    attrs["unit_of_measurement"] = "A"  # the caller's dict changes after the write
    second = states.async_set(LEAK, 13, first.attributes, timestamp=T2)
    third = states.async_set(LEAK, 13, {"unit_of_measurement": "µA"}, timestamp=T3)
    fourth = states.async_set(LEAK, 14, timestamp=T4)
    assert first.attributes == second.attributes == {"unit_of_measurement": "mA"}
    assert third.attributes == fourth.attributes == {"unit_of_measurement": "µA"}
    assert (second.last_changed, second.last_updated) == (T2, T2)
    assert (third.last_changed, third.last_updated) == (T2, T3)
    assert (fourth.domain, fourth.object_id) == ("sensor", "arcm_1_residual_current")
    # Only the machine that holds a State as current reports it.
    assert StateMachine(EventBus()).async_report([fourth], timestamp=T5) == [fourth]
    assert fourth.last_reported == T4
