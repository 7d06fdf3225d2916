"""Writing new values into a round-trip-loaded YAML structure, keeping what did not change.

Used by roundtrip.py (see there for why). Mappings are merged key by key: a value that did not
change keeps its original object (its quoting, flow style and the comments attached to its
key); a key spelled the old Home Assistant way (`platform:`, `service:`, `trigger:` for
`triggers:`) keeps its spelling when the new value arrives under the new name. Lists are
aligned with difflib, and items that changed are paired with the most similar old item, so an
item inserted in front does not drag every comment one item down. Every value replaced or key
added is journalled as a `Change`, so roundtrip.py can undo the ones that make no difference
to what the automation means (an editor sending back `for: 30.0` where the file says `30s`,
or the schema's defaults the file never spelled out). A `SecretRef` (secrets.py) is written as
the `!secret name` tag, never as the value.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml
from ruamel.yaml.comments import CommentedMap, CommentedSeq, TaggedScalar
from ruamel.yaml.scalarstring import DoubleQuotedScalarString

from .secrets import SecretRef

#: new key -> the older spellings the schema accepts for it (hub/core/automations/schema.py)
OLD_SPELLINGS: dict[str, tuple[str, ...]] = {
    "trigger": ("platform",), "action": ("service",), "triggers": ("trigger",),
    "conditions": ("condition",), "actions": ("action",),
}
_MISSING = object()


@dataclass
class Change:
    """One value replaced (or key added) in a mapping; can be undone and redone."""

    mapping: CommentedMap
    key: Any
    before: Any  # _MISSING: the key was added
    after: Any
    position: int

    def undo(self) -> None:
        if self.before is _MISSING:
            del self.mapping[self.key]
        else:
            self.mapping[self.key] = self.before

    def redo(self) -> None:
        if self.before is _MISSING:
            self.mapping.insert(min(self.position, len(self.mapping)), self.key, self.after)
        else:
            self.mapping[self.key] = self.after


class Merger:
    """Merges new plain values into loaded ruamel objects, journalling the changes."""

    def __init__(self) -> None:
        self.changes: list[Change] = []

    def value(self, old: Any, new: Any) -> Any:
        """What to store for `new` where `old` was: old itself, old updated in place, or new."""
        if isinstance(new, SecretRef):  # written as the tag, never as the value
            if isinstance(old, TaggedScalar) and _tag(old) == "!secret" and old.value == new.name:
                return old
            return TaggedScalar(value=new.name, tag="!secret")
        if isinstance(new, Mapping):
            target = old if isinstance(old, CommentedMap) else CommentedMap()
            self.merge_map(target, new)
            return target
        if isinstance(new, list | tuple):
            seq = old if isinstance(old, CommentedSeq) else CommentedSeq()
            self.merge_seq(seq, list(new))
            return seq
        if _same_scalar(old, new):
            return old  # keeps its quoting and formatting
        if isinstance(new, str) and _needs_quotes(new):
            return DoubleQuotedScalarString(new)
        return new

    def merge_map(self, old: CommentedMap, new: Mapping[Any, Any]) -> None:
        wanted = {plain_key(k): v for k, v in new.items()}
        present = {plain_key(k): k for k in old}
        target: dict[Any, Any] = {}  # wanted key -> the key it is written under
        for key in wanted:
            if key in present:
                target[key] = present[key]
                continue
            for spelling in OLD_SPELLINGS.get(str(key), ()):
                if (spelling in present and spelling not in wanted
                        and present[spelling] not in target.values()):
                    target[key] = present[spelling]
                    break
        kept = set(target.values())
        for key in [k for k in old if k not in kept]:
            del old[key]
        for key, value in wanted.items():
            if key in target:
                written = target[key]
                current = old[written]
                updated = self.value(current, value)
                if updated is not current:
                    old[written] = updated
                    self.changes.append(Change(old, written, current, updated, 0))
            else:
                fresh = self.value(None, value)
                old[key] = fresh
                self.changes.append(Change(old, key, _MISSING, fresh, len(old) - 1))

    def merge_seq(self, old: CommentedSeq, new: list[Any]) -> None:
        """Align old and new items so comments stay with the items they describe."""
        before = list(old)
        loose_before = [_loose(item) for item in before]
        loose_new = [_loose(item) for item in new]
        matcher = difflib.SequenceMatcher(a=[_canonical(v) for v in loose_before],
                                          b=[_canonical(v) for v in loose_new],
                                          autojunk=False)
        items: list[Any] = []
        origin: list[int | None] = []  # for each new item, the old index whose comments it keeps
        for _tag, a0, a1, b0, b1 in matcher.get_opcodes():
            pairs = _pair(loose_before, loose_new, range(a0, a1), range(b0, b1))
            for index in range(b0, b1):
                source = pairs.get(index)
                items.append(self.value(before[source] if source is not None else None,
                                        new[index]))
                origin.append(source)
        comments = dict(old.ca.items)
        old.ca.items.clear()
        old[:] = items
        for index, source in enumerate(origin):
            if source is not None and source in comments:
                old.ca.items[index] = comments[source]


def plain_key(key: Any) -> Any:
    return "on" if key is True else key  # YAML 1.1 `on:` read as True by PyYAML


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _loose(value: Any) -> Any:
    """A form for pairing only: old spellings renamed, one-item lists unwrapped, 5.0 -> 5."""
    if isinstance(value, Mapping):
        renamed = {old: new for new, olds in OLD_SPELLINGS.items() for old in olds
                   if new not in ("triggers", "conditions", "actions")}
        return {str(renamed.get(plain_key(k), plain_key(k))): _loose(v)
                for k, v in value.items()}
    if isinstance(value, list | tuple):
        return _loose(value[0]) if len(value) == 1 else [_loose(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        return str(value)
    return value


def _alike(old: Any, new: Any) -> float:
    """0..1; two mappings with no equal entry (`trigger: event` vs `trigger: state`) are 0."""
    if isinstance(old, Mapping) and isinstance(new, Mapping) and not any(
            key in new and _canonical(new[key]) == _canonical(value)
            for key, value in old.items()):
        return 0.0
    return difflib.SequenceMatcher(a=_canonical(old), b=_canonical(new), autojunk=False).ratio()


def _pair(old: list[Any], new: list[Any], old_range: range,
          new_range: range) -> dict[int, int]:
    """new index -> old index, most alike first (at least half alike), each used once."""
    scored = sorted(((_alike(old[a], new[b]), b, a) for a in old_range for b in new_range),
                    reverse=True)
    pairs: dict[int, int] = {}
    used: set[int] = set()
    for ratio, b, a in scored:
        if ratio >= 0.5 and b not in pairs and a not in used:
            pairs[b] = a
            used.add(a)
    return pairs


def _same_scalar(old: Any, new: Any) -> bool:
    if isinstance(old, CommentedMap | CommentedSeq):
        return False
    if isinstance(old, bool) or isinstance(new, bool):
        return type(old) is type(new) and old == new
    if isinstance(old, str) != isinstance(new, str):
        return False
    try:
        return bool(old == new)
    except Exception:  # noqa: BLE001 - exotic tagged scalars: treat as changed
        return False


def _tag(scalar: TaggedScalar) -> str:
    tag = scalar.tag
    return str(getattr(tag, "value", tag))


def _needs_quotes(text: str) -> bool:
    """Would PyYAML (YAML 1.1) read this plain scalar as something other than this string?"""
    try:
        return yaml.safe_load(text) != text
    except yaml.YAMLError:
        return True
