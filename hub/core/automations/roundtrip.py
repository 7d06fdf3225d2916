"""Rewriting one automation's YAML text so its own comments survive an edit.

Why: the API sends a whole automation (the editor's form), not a patch. Dumping it afresh
loses every comment a site admin wrote inside it ("# 300 mA per GB 51348", "# the night
shift"), the flaw of Home Assistant's editor. Here the old text of that one automation is
loaded with ruamel.yaml in round-trip mode (comments, key order, flow style and quoting are
kept on the loaded objects), the new values are written *into* that structure in place, and
it is dumped again with the indentation it had. A comment stays as long as the key (or list
item) it is attached to stays; it goes with a removed key.

How values are merged: mappings key by key (unchanged values keep their original objects, so
quoting and flow style stay; new keys go last); lists are aligned with difflib, so an item
inserted at the front does not drag every comment one item down. A new string that PyYAML
(YAML 1.1, what the hub loads the file with) would read as something else (`on`, `yes`,
`18:30`, `1e3`) is written quoted.

`hub/core/automations/yamlfile.py` splices the result into the file in place of the old lines
and checks it reads back as the same automation; anything this module cannot do (an alias to
an anchor outside the item, an unparsable item) raises RoundTripError and the caller falls
back to a fresh dump.
"""

from __future__ import annotations

import difflib
import io
import itertools
import json
from collections.abc import Mapping
from typing import Any

import yaml
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.scalarstring import DoubleQuotedScalarString
from ruamel.yaml.util import load_yaml_guess_indent


class RoundTripError(Exception):
    """The item's text cannot be updated in place (the caller rewrites it afresh)."""


def _yaml() -> YAML:
    rt = YAML(typ="rt")
    rt.preserve_quotes = True
    rt.width = 100
    rt.allow_unicode = True
    # `[{action: x}]` stays as written instead of the equivalent `[action: x]`
    rt.brace_single_entry_mapping_in_flow_sequence = True
    return rt


def _content_column(lines: list[str]) -> tuple[int, str]:
    """The column of the item's keys and the prefix of its first line (`- `, `-   `)."""
    first = lines[0]
    stripped = first.lstrip()
    if not stripped.startswith("-"):
        raise RoundTripError("the item does not start with '-'")
    rest = stripped[1:]
    if rest.strip():  # `- id: x`
        column = len(first) - len(rest.lstrip())
        return column, first[:column]
    for line in lines[1:]:  # `-` alone, keys on the next lines
        if line.strip() and not line.lstrip().startswith("#"):
            return len(line) - len(line.lstrip()), ""
    raise RoundTripError("empty item")


def _dedent(lines: list[str], column: int, prefix: str) -> str:
    out = []
    for number, line in enumerate(lines):
        if number == 0:
            out.append(line[len(prefix):] if prefix else "")
            continue
        spaces = len(line) - len(line.lstrip(" "))
        out.append(line[min(spaces, column):])
    return "".join(out)


def _reindent(text: str, column: int, prefix: str) -> str:
    lines = text.splitlines(keepends=True)
    pad = " " * column
    out = [prefix + lines[0] if prefix else "-\n" + pad + lines[0]]
    out += [pad + line if line.strip() else line for line in lines[1:]]
    return "".join(out)


def update_item_text(old_text: str, new: Mapping[str, Any]) -> str:
    """`old_text` (one `- ...` list item) with its values replaced by `new`, comments kept."""
    lines = old_text.splitlines(keepends=True)
    if not lines:
        raise RoundTripError("empty item")
    if not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    column, prefix = _content_column(lines)
    body = _dedent(lines, column, prefix)
    rt = _yaml()
    try:
        _, seq_indent, seq_offset = load_yaml_guess_indent(body)
        data = rt.load(body)
    except Exception as err:  # any parse failure means "rewrite afresh"
        raise RoundTripError(f"cannot load the item: {err}") from err
    if not isinstance(data, CommentedMap):
        raise RoundTripError("the item is not a mapping")
    _merge_map(data, new)
    rt.indent(mapping=_mapping_indent(body), sequence=seq_indent or 2, offset=seq_offset or 0)
    out = io.StringIO()
    rt.dump(data, out)
    return _reindent(out.getvalue(), column, prefix)


def _mapping_indent(body: str) -> int:
    """How far a nested mapping is indented under its key (ruamel guesses only sequences)."""
    lines = [line for line in body.splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    for here, after in itertools.pairwise(lines):
        text = here.strip()
        if text.endswith(":") and not text.startswith("-") and not after.lstrip().startswith("-"):
            step = (len(after) - len(after.lstrip())) - (len(here) - len(here.lstrip()))
            if step > 0:
                return step
    return 2


# -- merging new values into the loaded structure --------------------------------------------
def _plain_key(key: Any) -> Any:
    return "on" if key is True else key  # YAML 1.1 `on:` read as True by PyYAML


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _value(old: Any, new: Any) -> Any:
    """What to store for `new` where `old` was: old itself, old updated in place, or new."""
    if isinstance(new, Mapping):
        if isinstance(old, CommentedMap):
            _merge_map(old, new)
            return old
        fresh = CommentedMap()
        _merge_map(fresh, new)
        return fresh
    if isinstance(new, list | tuple):
        if isinstance(old, CommentedSeq):
            _merge_seq(old, list(new))
            return old
        fresh_seq = CommentedSeq()
        _merge_seq(fresh_seq, list(new))
        return fresh_seq
    if _same_scalar(old, new):
        return old  # keeps its quoting and formatting
    if isinstance(new, str) and _needs_quotes(new):
        return DoubleQuotedScalarString(new)
    return new


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


def _needs_quotes(text: str) -> bool:
    """Would PyYAML (YAML 1.1) read this plain scalar as something other than this string?"""
    try:
        return yaml.safe_load(text) != text
    except yaml.YAMLError:
        return True


def _merge_map(old: CommentedMap, new: Mapping[str, Any]) -> None:
    wanted = {_plain_key(k): v for k, v in new.items()}
    for key in [k for k in old if _plain_key(k) not in wanted]:
        del old[key]
    present = {_plain_key(k): k for k in old}
    for key, value in wanted.items():
        if key in present:
            original = present[key]
            updated = _value(old[original], value)
            if updated is not old[original]:
                old[original] = updated
        else:
            old[key] = _value(None, value)


def _merge_seq(old: CommentedSeq, new: list[Any]) -> None:
    """Align old and new items (difflib) so comments stay with the items they describe."""
    before = list(old)
    plain_before = [_to_plain(item) for item in before]
    matcher = difflib.SequenceMatcher(a=[_canonical(item) for item in plain_before],
                                      b=[_canonical(item) for item in new], autojunk=False)
    items: list[Any] = []
    origin: list[int | None] = []  # for each new item, the old index whose comments it keeps
    for tag, a0, a1, b0, b1 in matcher.get_opcodes():
        if tag == "equal":
            items.extend(before[a0:a1])
            origin.extend(range(a0, a1))
            continue
        pairs = _pair(plain_before, new, range(a0, a1), range(b0, b1))
        for index in range(b0, b1):  # replaced / inserted: keep the most similar old item
            source = pairs.get(index)
            items.append(_value(before[source] if source is not None else None, new[index]))
            origin.append(source)
    comments = dict(old.ca.items)
    old.ca.items.clear()
    old[:] = items
    for index, source in enumerate(origin):
        if source is not None and source in comments:
            old.ca.items[index] = comments[source]


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


def _to_plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(_plain_key(k)): _to_plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_to_plain(v) for v in value]
    if isinstance(value, str):
        return str(value)
    return value
