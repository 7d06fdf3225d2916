"""Editing automations.yaml one automation at a time, keeping everything else byte for byte.

Why not dump the whole file: a YAML library that re-emits the document changes quoting,
indentation and comments of automations nobody touched, and a site admin's notes are lost (the
HA editor's well-known flaw). Here the file is parsed only to learn where each automation
starts (hub/core/yaml_loader.py records the line of every list item); an edit replaces exactly
the lines of that one automation, appends a new one at the end, or removes one. Everything
outside the edited span is left untouched, byte for byte; comment lines directly above an
automation belong to it in the reader's eye and stay too.

Inside the edited span, the old text is updated in place with ruamel.yaml round-trip
(roundtrip.py), so the comments on keys and list items that are still there survive. The
result is read back with the hub's own loader and must give the automation that was asked
for (the `check` callback); if it does not, or the old text cannot be round-tripped (an alias
to an anchor elsewhere), the span is replaced by a fresh dump and a warning is logged.
A value equal to a secret of secrets.yaml is written as `!secret name` either way
(secrets.py): an edit never puts a secret into this file.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from ..yaml_loader import NodeList, YamlError, load_yaml, load_yaml_text
from .roundtrip import RoundTripError, update_item_text
from .secrets import SecretRef, Secrets

_LOGGER = logging.getLogger(__name__)


class AutomationFileError(Exception):
    pass


class _Dumper(yaml.SafeDumper):
    """Writes a `SecretRef` as `!secret name` (a fresh dump must not leak a secret either)."""


_Dumper.add_representer(
    SecretRef, lambda dumper, ref: dumper.represent_scalar("!secret", ref.name))


#: PyYAML quotes every tagged scalar (`!secret 'boss_phone'`); a plain name reads better
_QUOTED_SECRET = re.compile(r"(?<=[:-] )!secret '([A-Za-z0-9_.\-]+)'$", re.MULTILINE)


def dump_one(conf: dict[str, Any]) -> str:
    """One automation as a YAML list item (`- id: ...`), keys in the order given."""
    text = yaml.dump([_plain(conf)], Dumper=_Dumper, allow_unicode=True, sort_keys=False,
                     default_flow_style=False, width=100)
    return _QUOTED_SECRET.sub(r"!secret \1", text)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        # YAML 1.1 read `on:` as True; write it back as the key it was meant to be
        return {("on" if k is True else str(k)): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


class AutomationFile:
    """DIR/automations.yaml."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def text(self) -> str:
        return self.path.read_text(encoding="utf-8") if self.path.exists() else ""

    def _spans(self, text: str) -> dict[str, tuple[int, int]]:
        """id -> (first line index, end line index exclusive) of each automation."""
        if not text.strip():
            return {}
        data = load_yaml(self.path)
        if not isinstance(data, NodeList):
            raise AutomationFileError(f"{self.path.name} must be a list of automations")
        lines = text.splitlines(keepends=True)
        starts = [line - 1 for line in data.item_lines]
        spans: dict[str, tuple[int, int]] = {}
        for number, item in enumerate(data):
            start = starts[number]
            end = starts[number + 1] if number + 1 < len(starts) else len(lines)
            while end > start + 1 and (not lines[end - 1].strip()
                                       or lines[end - 1].lstrip().startswith("#")):
                end -= 1
            if isinstance(item, dict) and "id" in item:
                spans[str(item["id"])] = (start, end)
        return spans

    def item_text(self, automation_id: str) -> str | None:
        text = self.text()
        span = self._spans(text).get(automation_id)
        if span is None:
            return None
        return "".join(text.splitlines(keepends=True)[span[0]:span[1]])

    def _write(self, text: str) -> None:
        tmp = self.path.with_suffix(".yaml.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, self.path)  # a crash mid-write never leaves half a file

    def put(self, conf: dict[str, Any],
            check: Callable[[Any], bool] | None = None) -> tuple[str | None, str]:
        """Replace (or append) one automation; returns (old text, new text) of its span.

        `check(item)` answers whether an item read back from the new text is the automation
        wanted; an in-place update it rejects is replaced by a fresh dump.
        """
        # every secret value goes back into the file as its `!secret name`
        conf = Secrets.of_dir(self.path.parent).refs(conf)
        text = self.text()
        span = self._spans(text).get(str(conf["id"]))
        lines = text.splitlines(keepends=True)
        if span is None:
            new = dump_one(conf)
            if text and not text.endswith("\n"):
                text += "\n"
            self._write(text + new)
            return None, new
        old = "".join(lines[span[0]:span[1]])
        new = self._updated(old, conf, check)
        self._write("".join(lines[:span[0]]) + new + "".join(lines[span[1]:]))
        return old, new

    def replace_text(self, automation_id: str, new: str,
                     check: Callable[[Any], bool] | None = None) -> tuple[str | None, str]:
        """Put `new` (one item's text: a stored version, or what a site admin typed) verbatim
        in place of the old.

        With `check`, the whole new file is read back first with the hub's own loader: it must
        still be a list with the same other automations, and the one with this id must pass
        `check`; otherwise nothing is written (AutomationFileError), so a typed text indented
        wrongly can never swallow or split its neighbours.
        """
        text = self.text()
        spans = self._spans(text)
        span = spans.get(automation_id)
        if not new.endswith("\n"):
            new += "\n"
        lines = text.splitlines(keepends=True)
        if span is None:
            whole = text + ("\n" if text and not text.endswith("\n") else "") + new
            old = None
        else:
            whole = "".join(lines[:span[0]]) + new + "".join(lines[span[1]:])
            old = "".join(lines[span[0]:span[1]])
        if check is not None:
            before = load_yaml_text(text, self.path) if text.strip() else []
            expected = {str(item.get("id")) for item in before if isinstance(item, dict)}
            self._check_whole(whole, automation_id, len(before) + (span is None),
                              expected | {automation_id}, check)
        self._write(whole)
        return old, new

    def _check_whole(self, whole: str, automation_id: str, count: int, ids: set[str],
                     check: Callable[[Any], bool]) -> None:
        try:
            items = load_yaml_text(whole, self.path)
        except YamlError as err:
            raise AutomationFileError(f"the text would break {self.path.name}: {err}") from None
        if not isinstance(items, list):
            raise AutomationFileError(f"the text would break {self.path.name}")
        found = [item for item in items if isinstance(item, dict)
                 and str(item.get("id")) == automation_id]
        read_ids = {str(item.get("id")) for item in items if isinstance(item, dict)}
        if len(items) != count or read_ids != ids or len(found) != 1:
            raise AutomationFileError(
                "the text must hold exactly one automation, as one list item (`- id: ...`) or "
                "one mapping (`id: ...`)")
        if not check(found[0]):
            raise AutomationFileError(
                f"the text does not read back as automation {automation_id} as checked")

    def _updated(self, old: str, conf: dict[str, Any],
                 check: Callable[[Any], bool] | None) -> str:
        """The old span with the new values written in (comments kept), or a fresh dump."""
        def same(text: str) -> bool:
            try:
                items = load_yaml_text(text, self.path)
            except YamlError:
                return False
            return isinstance(items, list) and len(items) == 1 and check(items[0])

        try:
            return update_item_text(old, conf, same if check is not None else None)
        except RoundTripError as err:
            _LOGGER.warning("%s: automation %s rewritten without its inner comments: %s",
                            self.path.name, conf["id"], err)
            return dump_one(conf)

    def remove(self, automation_id: str) -> str | None:
        text = self.text()
        span = self._spans(text).get(automation_id)
        if span is None:
            return None
        lines = text.splitlines(keepends=True)
        self._write("".join(lines[:span[0]]) + "".join(lines[span[1]:]))
        return "".join(lines[span[0]:span[1]])


class _ItemLoader(yaml.SafeLoader):
    """Reads one automation's text: `!secret name` stays that string (the API resolves it and
    the file keeps the tag); any other tag, `!include` above all, is an error, so text from a
    browser can never make the hub read another file."""


_ItemLoader.add_constructor(
    "!secret", lambda loader, node: f"!secret {loader.construct_scalar(node)}")


def parse_item(text: str) -> Any:
    """The automation in a version's text (a one-item list)."""
    data = _load_item(text)
    if isinstance(data, list) and len(data) == 1:
        return data[0]
    raise AutomationFileError("a version holds exactly one automation")


def _load_item(text: str) -> Any:
    try:
        data = yaml.load(text, Loader=_ItemLoader)  # a SafeLoader subclass
        json.dumps(data, default=str)  # an alias to its own parent would recurse forever
        return data
    except ValueError as err:
        raise AutomationFileError(f"{err} (an alias that contains itself)") from None
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"line {mark.line + 1}: " if mark is not None else ""
        raise AutomationFileError(f"{where}{err.problem or err}") from None
    except yaml.YAMLError as err:
        raise AutomationFileError(str(err)) from None


def typed_item(text: str) -> tuple[str, dict[str, Any]]:
    """(list item text, automation) of what a site admin typed in the editor's YAML view.

    The text is kept as typed, comments included; a single mapping (`id: ...`) becomes the
    list item `- id: ...` by indenting it. Raises AutomationFileError naming the line of a
    syntax error, or when the text is not exactly one automation.
    """
    data = _load_item(text)
    if isinstance(data, list) and len(data) == 1 and isinstance(data[0], dict):
        return text, data[0]
    if isinstance(data, dict):
        lines = text.splitlines(keepends=True)
        out: list[str] = []
        dashed = False
        for line in lines:
            body = line.strip()
            if not dashed and body and not body.startswith("#"):
                out.append("- " + line)
                dashed = True
            elif not dashed or not body:
                out.append(line)  # comments above it stay above the item, as typed
            else:
                out.append("  " + line)
        return "".join(out), data
    raise AutomationFileError(
        "the text must hold exactly one automation (`id: ...` or one list item `- id: ...`)")
