"""Rewriting one automation's YAML text so its own comments survive an edit.

Why: the API sends a whole automation (the editor's form), not a patch. Dumping it afresh
loses every comment a site admin wrote inside it ("# 300 mA per GB 51348", "# the night
shift"), the flaw of Home Assistant's editor. Here the old text of that one automation is
loaded with ruamel.yaml in round-trip mode (comments, key order, flow style and quoting are
kept on the loaded objects), the new values are written *into* that structure in place, and
it is dumped again with the indentation it had. A comment stays as long as the key (or list
item) it is attached to stays; it goes with a removed key.

How values are merged: yamlmerge.py (mappings key by key, lists aligned with difflib). A new
string that PyYAML (YAML 1.1, what the hub loads the file with) would read as something else
(`on`, `yes`, `18:30`, `1e3`) is written quoted.

Then the edit is made as small as it can be: `same(text)` (from yamlfile.py) says whether a
text reads back as the automation wanted; each journalled change is undone in turn and stays
undone when the text still means the same. So an editor that sends back the normalised config
the API shows (`for: 30.0`, `at: [66600]`, `enabled: true`, `mode: single`, …) changes only the
lines whose meaning changed, and `for: 30s` stays as written.

`hub/core/automations/yamlfile.py` splices the result into the file in place of the old lines;
anything this module cannot do (an alias to an anchor outside the item, an unparsable item, a
result that does not read back as wanted) raises RoundTripError and the caller falls back to
a fresh dump.
"""

from __future__ import annotations

import io
import itertools
from collections.abc import Callable, Mapping
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap
from ruamel.yaml.util import load_yaml_guess_indent

from .yamlmerge import Change, Merger

#: at most this many undo tries per edit (each dumps and re-reads the item)
MAX_UNDO_TRIES = 200


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


def update_item_text(old_text: str, new: Mapping[str, Any],
                     same: Callable[[str], bool] | None = None) -> str:
    """`old_text` (one `- ...` list item) with its values replaced by `new`, comments kept.

    `same(text)`: does this item text read back as the automation wanted? With it, the result
    is checked, and changes that make no difference are undone (see the module docstring).
    """
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
    merger = Merger()
    merger.merge_map(data, new)
    rt.indent(mapping=_mapping_indent(body), sequence=seq_indent or 2, offset=seq_offset or 0)

    def render() -> str:
        out = io.StringIO()
        rt.dump(data, out)
        return _reindent(out.getvalue(), column, prefix)

    text = render()
    if same is None:
        return text
    if not same(text):
        raise RoundTripError("the updated text reads back as a different automation")
    tries = [0]

    def undo_what_does_not_matter(changes: list[Change]) -> None:
        """Undo the group if that keeps the meaning; else split it (few tries when most of an
        edit's changes are no-ops, as when the normalised config is sent back)."""
        if not changes or tries[0] >= MAX_UNDO_TRIES:
            return
        tries[0] += 1
        for change in reversed(changes):
            change.undo()
        if same(render()):
            return
        for change in changes:
            change.redo()
        if len(changes) > 1:
            half = len(changes) // 2
            undo_what_does_not_matter(changes[:half])
            undo_what_does_not_matter(changes[half:])

    undo_what_does_not_matter(merger.changes)
    return render()


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


