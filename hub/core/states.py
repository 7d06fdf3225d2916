"""Current state of every entity, and the `state_changed` events that everything else hangs on.

Three timestamps, as Home Assistant defines them, because users ask three different questions:
* `last_changed`  - when did the value itself change? ("how long has leakage been at 550 mA?")
* `last_updated`  - when did the value or any attribute change?
* `last_reported` - when did the device last say anything? (an unchanged value still proves the
  detector is alive; the recorder and the comms-loss logic need this)

Timestamps are float unix seconds internally (cheap on the hot path) and ISO 8601 in JSON.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from .context import Context
from .events import EVENT_STATE_CHANGED, EVENT_STATE_REPORTED, ORIGIN_REMOTE, EventBus

STATE_UNAVAILABLE = "unavailable"
STATE_UNKNOWN = "unknown"
STATE_ON = "on"
STATE_OFF = "off"

# What `StateMachine.async_mirror` did with another worker's state.
MIRROR_CHANGED = "changed"    # a new State, `state_changed` fired with origin "remote"
MIRROR_REPORTED = "reported"  # same value and attributes, newer: only last_reported moved
MIRROR_STALE = "stale"        # not newer than the State held: ignored

_ENTITY_ID = re.compile(r"^(?!_)[a-z0-9_]+(?<!_)\.(?!_)[a-z0-9_]+(?<!_)$")
_SLUG_DROP = re.compile(r"[^a-z0-9_]+")
_SLUG_SQUASH = re.compile(r"_+")


class InvalidEntityId(ValueError):
    """An entity id that is not `domain.object_id` in lower-case letters, digits and `_`."""


def valid_entity_id(entity_id: str) -> bool:
    return _ENTITY_ID.match(entity_id) is not None and "__" not in entity_id


def split_entity_id(entity_id: str) -> tuple[str, str]:
    domain, _, object_id = entity_id.partition(".")
    return domain, object_id


def slugify(text: str) -> str:
    """`arcm-1` -> `arcm_1`: device ids become the object part of entity ids (CONTRACTS §4)."""
    slug = _SLUG_DROP.sub("_", text.strip().lower())
    return _SLUG_SQUASH.sub("_", slug).strip("_") or "unnamed"


def iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat()


class State:
    """One entity's state. Immutable once created: a change is a new State object."""

    __slots__ = (
        "_machine",
        "attributes",
        "context",
        "domain",
        "entity_id",
        "last_changed",
        "last_reported",
        "last_updated",
        "object_id",
        "state",
    )

    def __init__(
        self,
        entity_id: str,
        state: str,
        attributes: Mapping[str, Any] | None = None,
        last_changed: float | None = None,
        last_updated: float | None = None,
        last_reported: float | None = None,
        context: Context | None = None,
        validate_entity_id: bool = True,
    ) -> None:
        if validate_entity_id and not valid_entity_id(entity_id):
            raise InvalidEntityId(
                f"Invalid entity id {entity_id!r}: expected domain.object_id in lower-case "
                "letters, digits and single underscores"
            )
        now = time.time()
        self.entity_id = entity_id
        self.state = state
        self.attributes = MappingProxyType(dict(attributes) if attributes else {})
        self.last_updated = last_updated if last_updated is not None else now
        self.last_changed = last_changed if last_changed is not None else self.last_updated
        self.last_reported = last_reported if last_reported is not None else self.last_updated
        self.context = context if context is not None else Context()
        self.domain, self.object_id = split_entity_id(entity_id)
        # The StateMachine holding this State as its entity's current one, else None (see
        # `StateMachine.async_report`: one attribute read instead of a dict lookup per State).
        self._machine: StateMachine | None = None

    @classmethod
    def _successor(cls, old: State, text: str, attributes: MappingProxyType[str, Any],
                   last_changed: float, now: float, context: Context | None) -> State:
        """The next State of `old`'s entity, built without re-validating or re-splitting its
        id; `attributes` is a read-only mapping nobody can change (`old`'s own, when equal).

        The state machine's hot path: every changed reading of every detector comes here.
        """
        state = object.__new__(cls)
        state.entity_id = old.entity_id
        state.state = text
        state.attributes = attributes
        state.last_changed = last_changed
        state.last_updated = now
        state.last_reported = now
        state.context = context if context is not None else Context()
        state.domain = old.domain
        state.object_id = old.object_id
        state._machine = None
        return state

    @property
    def available(self) -> bool:
        return self.state != STATE_UNAVAILABLE

    def as_float(self) -> float | None:
        """The state as a number, or None for text states such as `on` or `unavailable`."""
        try:
            return float(self.state)
        except (TypeError, ValueError):
            return None

    def as_dict(self) -> dict[str, Any]:
        return {
            "entity_id": self.entity_id,
            "state": self.state,
            "attributes": dict(self.attributes),
            "last_changed": iso(self.last_changed),
            "last_updated": iso(self.last_updated),
            "last_reported": iso(self.last_reported),
            "context": self.context.as_dict(),
        }

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, State)
            and self.entity_id == other.entity_id
            and self.state == other.state
            and self.attributes == other.attributes
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<State {self.entity_id}={self.state}>"


def format_state(value: Any) -> str:
    """The canonical text of a value: `True` -> `on`, `None` -> `unknown`, 1.50 -> `1.5`."""
    if value is None:
        return STATE_UNKNOWN
    if value is True:
        return STATE_ON
    if value is False:
        return STATE_OFF
    if isinstance(value, float):
        return repr(round(value, 6)).removesuffix(".0") if value.is_integer() else repr(
            round(value, 6)
        )
    return str(value)


class StateMachine:
    """Holds the current State of every entity and announces changes on the bus."""

    def __init__(self, bus: EventBus) -> None:
        self._bus = bus
        self._states: dict[str, State] = {}
        self._domain_index: dict[str, dict[str, State]] = {}

    def get(self, entity_id: str) -> State | None:
        return self._states.get(entity_id)

    def all(self, domain: str | Iterable[str] | None = None) -> list[State]:
        if domain is None:
            return list(self._states.values())
        domains = (domain,) if isinstance(domain, str) else tuple(domain)
        return [s for d in domains for s in self._domain_index.get(d, {}).values()]

    def entity_ids(self, domain: str | None = None) -> list[str]:
        if domain is None:
            return list(self._states)
        return list(self._domain_index.get(domain, {}))

    def __len__(self) -> int:
        return len(self._states)

    def async_set(
        self,
        entity_id: str,
        new_state: Any,
        attributes: Mapping[str, Any] | None = None,
        force_update: bool = False,
        context: Context | None = None,
        timestamp: float | None = None,
    ) -> State:
        """Set a state from inside the event loop; fires `state_changed` when anything changed.

        An identical write only moves `last_reported` (and fires `state_reported` when anyone
        listens), so a detector repeating 0 mA every second costs no state_changed storm.
        """
        text = new_state if isinstance(new_state, str) else format_state(new_state)
        now = time.time() if timestamp is None else timestamp
        old = self._states.get(entity_id)

        if old is not None:
            old_attributes = old.attributes
            # Equal attributes keep the old State's read-only mapping: no copy per reading.
            same_attributes = attributes is None or attributes is old_attributes or \
                old_attributes == attributes
            if old.state == text:
                if same_attributes and not force_update:
                    self._reported(old, now, context)
                    return old
                last_changed = now if force_update else old.last_changed
            else:
                last_changed = now
        else:
            same_attributes, last_changed = False, now
        state = self._install(entity_id, old, text, attributes, same_attributes, last_changed,
                              now, context)
        self._bus.async_fire(
            EVENT_STATE_CHANGED,
            {"entity_id": entity_id, "old_state": old, "new_state": state},
            context=state.context,
            time_fired=now,
        )
        return state

    def async_mirror(
        self,
        entity_id: str,
        new_state: str,
        attributes: Mapping[str, Any] | None,
        last_changed: float,
        last_updated: float,
        context: Context | None = None,
    ) -> str:
        """Apply a state that another hub worker owns (issue 12: workers sharing one broker).

        The sender's `last_changed` / `last_updated` are kept, and `state_changed` is fired
        with `origin="remote"`: listeners that act on a reading (the recorder, state-trigger
        automations, threshold alarms, the relay itself) skip remote events, because the
        owning worker already did that work; the API, the websocket and live pages show them.
        A state not newer than the one held (`last_updated`) is stale and ignored, so a late
        or re-delivered batch never moves an entity back in time. Returns MIRROR_CHANGED,
        MIRROR_REPORTED (same value and attributes: only `last_reported` moves, no event) or
        MIRROR_STALE. Raises InvalidEntityId for a new entity with an invalid id.
        """
        old = self._states.get(entity_id)
        if old is not None:
            if last_updated <= old.last_updated:
                return MIRROR_STALE
            same_attributes = attributes is None or old.attributes == attributes
            if old.state == new_state and same_attributes:
                old.last_reported = max(old.last_reported, last_updated)
                return MIRROR_REPORTED
        else:
            same_attributes = False
        state = self._install(entity_id, old, new_state, attributes, same_attributes,
                              last_changed, last_updated, context)
        self._bus.async_fire(
            EVENT_STATE_CHANGED,
            {"entity_id": entity_id, "old_state": old, "new_state": state},
            origin=ORIGIN_REMOTE,
            context=state.context,
            time_fired=last_updated,
        )
        return MIRROR_CHANGED

    def _install(self, entity_id: str, old: State | None, text: str,
                 attributes: Mapping[str, Any] | None, same_attributes: bool,
                 last_changed: float, now: float, context: Context | None) -> State:
        """Make a new State the entity's current one (shared by `async_set` and `async_mirror`).

        With `old`, its successor (no id validation, and `old`'s read-only attributes kept
        when `same_attributes`); without, a new State once its id is valid (InvalidEntityId
        otherwise). `last_updated` and `last_reported` are both `now`. The caller fires the
        event: the two differ in origin and time.
        """
        if old is not None:
            state = State._successor(
                old, text,
                old.attributes if same_attributes else MappingProxyType(dict(attributes or {})),
                last_changed, now, context)
            old._machine = None
            self._domain_index[old.domain][entity_id] = state
        else:
            if not valid_entity_id(entity_id):
                raise InvalidEntityId(
                    f"Invalid entity id {entity_id!r}: expected domain.object_id in lower-case "
                    "letters, digits and single underscores"
                )
            state = State(entity_id, text, attributes, last_changed=last_changed,
                          last_updated=now, last_reported=now, context=context,
                          validate_entity_id=False)
            domain_states = self._domain_index.get(state.domain)
            if domain_states is None:
                domain_states = self._domain_index[state.domain] = {}
            domain_states[entity_id] = state
        state._machine = self
        self._states[entity_id] = state
        return state

    def async_report(self, states: Iterable[State], timestamp: float | None = None,
                     context: Context | None = None) -> list[State]:
        """Say that the writer of each State read the same value and attributes again.

        The same outcome as an identical `async_set` per entity (only `last_reported` moves;
        `state_reported` fires when anyone listens), for a poller that keeps the States it
        wrote and knows its readings did not change: no formatting, no comparison of values
        and attributes, one call per poll. Returns the States that are no longer their entity's
        current one (someone wrote it since), untouched; the caller writes those with
        `async_set`.
        """
        now = time.time() if timestamp is None else timestamp
        stale: list[State] = []
        if self._bus._listeners.get(EVENT_STATE_REPORTED):
            for state in states:
                if state._machine is self:
                    self._reported(state, now, context)
                else:
                    stale.append(state)
            return stale
        for state in states:
            # Set by async_set, cleared when this machine replaces or removes the State: the
            # same answer as `self._states.get(state.entity_id) is state`, without the lookup.
            if state._machine is self:
                state.last_reported = now
            else:
                stale.append(state)
        return stale

    def _reported(self, state: State, now: float, context: Context | None) -> None:
        old_last_reported = state.last_reported
        state.last_reported = now
        if self._bus._listeners.get(EVENT_STATE_REPORTED):
            self._bus.async_fire(
                EVENT_STATE_REPORTED,
                {"entity_id": state.entity_id, "old_last_reported": old_last_reported,
                 "new_state": state},
                context=context,
                time_fired=now,
            )

    def async_remove(self, entity_id: str, context: Context | None = None) -> bool:
        old = self._states.pop(entity_id, None)
        if old is None:
            return False
        old._machine = None
        self._domain_index.get(old.domain, {}).pop(entity_id, None)
        self._bus.async_fire(
            EVENT_STATE_CHANGED,
            {"entity_id": entity_id, "old_state": old, "new_state": None},
            context=context,
        )
        return True
