"""YAML loading that remembers the line of every key, so errors can point at it."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from components.core.errors import ConfigError, Location

KeyPath = tuple[str | int, ...]


class LineMap:
    """Maps a key path such as ("slurm", "partitions", "gpu") to its 1-based line."""

    def __init__(self, file: Path, lines: dict[KeyPath, int]):
        self.file = file
        self._lines = lines

    def line_of(self, path: KeyPath) -> int | None:
        # Fall back to the nearest parent that has a line: a missing key is reported at its parent.
        for end in range(len(path), -1, -1):
            line = self._lines.get(tuple(path[:end]))
            if line is not None:
                return line
        return None

    def items(self):
        """Every recorded (key path, line) pair."""
        return self._lines.items()

    def location(self, path: KeyPath) -> Location:
        return Location(file=self.file, line=self.line_of(path), key=dotted(path) or None)


def dotted(path: KeyPath) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys instead of silently keeping the last one."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False):
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"duplicate key {key!r} (first defined on line {seen[key]})",
                key_node.start_mark,
            )
        seen[key] = key_node.start_mark.line + 1
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _collect_lines(node: yaml.Node, prefix: KeyPath, out: dict[KeyPath, int]) -> None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            path = (*prefix, str(key_node.value))
            out[path] = key_node.start_mark.line + 1
            _collect_lines(value_node, path, out)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            path = (*prefix, index)
            out[path] = item.start_mark.line + 1
            _collect_lines(item, path, out)


# Definitions load reads the same profiles and defs.yaml files many times (every component plans,
# every feature scans the graph); parsed once per file version, each caller gets its own copy.
_PARSED: dict[tuple[Path, int, int], tuple[Any, dict[KeyPath, int]]] = {}


def load_yaml(file: Path) -> tuple[Any, LineMap]:
    """Parse one YAML document; invalid YAML becomes a ConfigError with the file and line.

    Returns (data, line map); the data is the caller's own (a copy), so mutating it is safe.
    """
    file = Path(file)
    try:
        stat = file.stat()
        version = (file.resolve(), stat.st_mtime_ns, stat.st_size)
        if version in _PARSED:
            data, lines = _PARSED[version]
            return copy.deepcopy(data), LineMap(file, dict(lines))
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read file: {exc.strerror}", location=Location(file=file)) from None
    except UnicodeDecodeError as exc:
        line = file.read_bytes()[: exc.start].count(b"\n") + 1
        raise ConfigError(f"not UTF-8 text: byte 0x{exc.object[exc.start]:02x} cannot be decoded",
                          fix="save the file as UTF-8 (for example: iconv -f latin1 -t utf-8)",
                          location=Location(file=file, line=line)) from None
    try:
        loader = _UniqueKeyLoader(text)
        try:
            node = loader.get_single_node()
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        problem = exc.problem or str(exc)
        if exc.context:
            problem = f"{exc.context}: {problem}"
        raise ConfigError(
            f"invalid YAML: {problem}",
            fix="correct the YAML syntax at that line (indentation, a missing ':' or an unclosed quote)",
            location=Location(file=file, line=line),
        ) from None
    lines: dict[KeyPath, int] = {}
    if node is not None:
        lines[()] = node.start_mark.line + 1
        _collect_lines(node, (), lines)
    _PARSED[version] = (copy.deepcopy(data), dict(lines))
    return data, LineMap(file, lines)
