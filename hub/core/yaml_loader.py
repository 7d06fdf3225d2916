"""YAML loading that remembers where every value came from.

A site admin who mistypes a key at 3 a.m. needs `configuration.yaml:42: devices[3].link.port:
expected int`, not a stack trace. So the loader builds mappings and sequences that carry their
file and line (and the line of every key), and supports Home Assistant's `!include FILE` and
`!secret NAME` (looked up in `secrets.yaml` beside the configuration).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


class YamlError(Exception):
    """A file that cannot be read or parsed; the message names the file and line."""

    def __init__(self, message: str, file: str | None = None, line: int | None = None) -> None:
        super().__init__(message)
        self.file = file
        self.line = line


class NodeDict(dict):  # type: ignore[type-arg]
    """A dict that knows its file, its line, and the line of each key."""

    __slots__ = ("file", "key_lines", "line")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.file: str | None = None
        self.line: int | None = None
        self.key_lines: dict[Any, int] = {}


class NodeList(list):  # type: ignore[type-arg]
    """A list that knows its file, its line, and the line of each item."""

    __slots__ = ("file", "item_lines", "line")

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.file: str | None = None
        self.line: int | None = None
        self.item_lines: list[int] = []


class NodeStr(str):
    """A scalar string with its origin (used for !include / !secret values)."""

    __slots__ = ("file", "line")


# libyaml's parser when PyYAML was built with it (about 10x faster: a `devices:` list of
# 100,000 detectors parsed in pure Python took minutes); the constructors below are the same
# either way, and libyaml's nodes carry the same marks, so every line number stays exact.
_BaseLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_BaseLoader):  # type: ignore[misc,valid-type]
    def __init__(self, stream: Any, path: Path, secrets: dict[str, Any] | None) -> None:
        super().__init__(stream)
        self.path = path
        self.secrets = secrets


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> NodeDict:
    loader.flatten_mapping(node)
    result = NodeDict()
    result.file = str(loader.path)
    result.line = node.start_mark.line + 1
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in result:
            raise YamlError(
                f"duplicate key {key!r}", str(loader.path), key_node.start_mark.line + 1
            )
        result[key] = loader.construct_object(value_node, deep=True)
        result.key_lines[key] = key_node.start_mark.line + 1
    return result


def _construct_sequence(loader: _Loader, node: yaml.SequenceNode) -> NodeList:
    result = NodeList()
    result.file = str(loader.path)
    result.line = node.start_mark.line + 1
    for child in node.value:
        result.append(loader.construct_object(child, deep=True))
        result.item_lines.append(child.start_mark.line + 1)
    return result


def _include(loader: _Loader, node: yaml.ScalarNode) -> Any:
    target = (loader.path.parent / str(loader.construct_scalar(node))).resolve()
    line = node.start_mark.line + 1
    if not target.is_file():
        raise YamlError(f"!include {target.name}: file not found", str(loader.path), line)
    return load_yaml(target, loader.secrets)


def _secret(loader: _Loader, node: yaml.ScalarNode) -> Any:
    name = str(loader.construct_scalar(node))
    line = node.start_mark.line + 1
    secrets = loader.secrets
    if secrets is None:
        secrets_path = loader.path.parent / "secrets.yaml"
        secrets = load_yaml(secrets_path, {}) if secrets_path.is_file() else {}
        loader.secrets = secrets
    if not isinstance(secrets, dict) or name not in secrets:
        raise YamlError(f"!secret {name}: not found in secrets.yaml", str(loader.path), line)
    return secrets[name]


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)
_Loader.add_constructor("!include", _include)
_Loader.add_constructor("!secret", _secret)


def load_yaml(path: str | Path, secrets: dict[str, Any] | None = None) -> Any:
    """Parse one YAML file (following `!include`); an empty file is an empty mapping."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise YamlError(f"cannot read: {err.strerror}", str(path)) from err
    return load_yaml_text(text, path, secrets)


def load_yaml_text(text: str, path: str | Path,
                   secrets: dict[str, Any] | None = None) -> Any:
    """Parse YAML text as if it were the file `path` (an edit is checked before it is written)."""
    path = Path(path)
    loader = _Loader(text, path, secrets)
    try:
        data = loader.get_single_data()
    except YamlError:
        raise
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        raise YamlError(
            f"invalid YAML: {err.problem or err}",
            str(path),
            mark.line + 1 if mark else None,
        ) from err
    except yaml.YAMLError as err:
        raise YamlError(f"invalid YAML: {err}", str(path)) from err
    finally:
        loader.dispose()
    if data is None:
        data = NodeDict()
        data.file, data.line = str(path), 1
    return data


def locate(data: Any, path: list[Any]) -> tuple[str | None, int | None]:
    """The file and line of the deepest node along `path` (keys and list indices)."""
    file = getattr(data, "file", None)
    line = getattr(data, "line", None)
    node = data
    last = len(path) - 1
    for index, step in enumerate(path):
        if isinstance(node, NodeDict):
            if step in node.key_lines:
                file, line = node.file, node.key_lines[step]
            if step not in node:
                break
            node = node[step]
        elif isinstance(node, NodeList) and isinstance(step, int) and 0 <= step < len(node):
            file, line = node.file, node.item_lines[step]
            node = node[step]
        else:
            break
        node_file = getattr(node, "file", None)
        if node_file is not None and node_file != file and index < last:
            # inside an !include: point into that file
            file, line = node_file, getattr(node, "line", None)
    return file, line
