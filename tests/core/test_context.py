"""Context: ULID ids that sort by time, generated only when needed, chained to their cause."""

from __future__ import annotations

import pytest

from hub.core import context as context_mod
from hub.core.context import Context, ulid_at, ulid_now, ulid_to_timestamp

CROCKFORD = set("0123456789ABCDEFGHJKMNPQRSTVWXYZ")


def test_ulid_shape() -> None:
    ulid = ulid_now()
    assert len(ulid) == 26
    assert set(ulid) <= CROCKFORD


def test_ulids_sort_by_time() -> None:
    timestamps = [1_700_000_000.0 + step * 0.001 for step in range(0, 5000, 7)]
    timestamps += [0.001, 1.0, 4_102_444_800.0]  # 1970 up to 2100
    ids = [ulid_at(ts) for ts in timestamps]
    assert sorted(ids) == [ulid_at_sorted for _, ulid_at_sorted in sorted(zip(timestamps, ids))]


def test_ulid_timestamp_round_trip_at_millisecond_precision() -> None:
    assert ulid_to_timestamp(ulid_at(1_764_480_000.5)) == pytest.approx(1_764_480_000.5)
    assert ulid_to_timestamp(ulid_at(1_764_480_000.1234)) == pytest.approx(1_764_480_000.123)


def test_ulids_at_the_same_instant_differ() -> None:
    assert len({ulid_at(1_764_480_000.0) for _ in range(1000)}) == 1000


def test_id_is_generated_lazily_and_once(monkeypatch: pytest.MonkeyPatch) -> None:
    generated: list[str] = []

    def counting_ulid_now() -> str:
        generated.append(ulid_at(1_764_480_000.0))
        return generated[-1]

    monkeypatch.setattr(context_mod, "ulid_now", counting_ulid_now)
    context = Context(user_id="admin")
    assert generated == []  # creating a context on the hot path costs no ULID
    first = context.id
    assert context.id == first
    assert generated == [first]


def test_explicit_id_is_kept() -> None:
    assert Context(id="01ARZ3NDEKTSV4RRFFQ69G5FAV").id == "01ARZ3NDEKTSV4RRFFQ69G5FAV"


def test_child_chain_answers_who_caused_it() -> None:
    reading = Context()
    alarm = reading.child()
    automation = alarm.child(user_id="automation:trip-on-leak")
    trip = automation.child()
    assert alarm.parent_id == reading.id
    assert automation.parent_id == alarm.id
    assert trip.parent_id == automation.id
    assert trip.user_id == "automation:trip-on-leak"  # the user is inherited
    assert reading.parent_id is None
    assert len({reading.id, alarm.id, automation.id, trip.id}) == 4


def test_child_keeps_the_user_unless_another_is_named() -> None:
    parent = Context(user_id="alice")
    assert parent.child().user_id == "alice"
    assert parent.child(user_id="bob").user_id == "bob"


def test_equality_and_hash_follow_the_id() -> None:
    first = Context(id="A" * 26)
    assert first == Context(id="A" * 26, user_id="someone else")
    assert first != Context()
    assert len({first, Context(id="A" * 26)}) == 1
    assert first.as_dict() == {"id": "A" * 26, "user_id": None, "parent_id": None}
