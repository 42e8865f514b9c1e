"""One defs.yaml read the way dagster reads it, with every file-level mistake as a ConfigError.

dagster reports a defs.yaml that is not UTF-8 with a raw traceback, an empty one with
"Invariant failed", and silently keeps the last of two equal keys. Reading the file here first
(bytes, then YAML nodes) names the file and line for each of these before dagster sees it.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from components.core.errors import ConfigError, Location
from components.core.yamlio import dotted
from components.core.yaml_scalars import DefsLoader, is_plain, scalar_value

# The top-level keys dagster accepts in a component file.
TOP_LEVEL_KEYS = ("type", "attributes", "requirements", "template_vars_module", "post_processing")


@dataclass(frozen=True)
class ComponentDoc:
    """One YAML document of a defs.yaml: its component type and its attributes node (None if absent)."""

    file: Path
    type_name: str
    type_line: int
    attributes: yaml.Node | None


def read_defs_file(file: Path) -> list[ComponentDoc]:
    """Parse a defs.yaml into its component documents.

    Raises ConfigError (file and line) for: bytes that are not UTF-8, invalid YAML, a key given twice
    in one mapping, a file without any component, a document that is not a mapping, a missing or
    non-text `type`, and an unknown top-level key.
    """
    file = Path(file)
    text = _decode(file)
    try:
        nodes = list(yaml.compose_all(text, Loader=DefsLoader))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = f"{exc.context}: {exc.problem}" if exc.context else str(exc.problem)
        raise ConfigError(f"invalid YAML: {problem}",
                          fix="correct the YAML syntax at that line (indentation, a missing ':' or an unclosed quote)",
                          location=Location(file=file, line=mark.line + 1 if mark else None)) from None
    nodes = [n for n in nodes if not (is_plain(n) and scalar_value(n) is None)]
    if not nodes:
        raise ConfigError("defs.yaml declares no component: the file is empty or only comments",
                          fix="start it with `type: components.SlurmAssetComponent` (or another component type) "
                              "and its `attributes:`, or delete the file and its folder",
                          location=Location(file=file, line=1))
    docs = []
    for node in nodes:
        _refuse_duplicates(node, file)
        docs.append(_document(node, file))
    return docs


def _decode(file: Path) -> str:
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read file: {exc.strerror}", location=Location(file=file)) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError(f"the file is not UTF-8 text (byte 0x{data[exc.start]:02x} cannot be decoded)",
                          fix="save it as UTF-8 in your editor, or convert it: iconv -f latin1 -t utf-8",
                          location=Location(file=file, line=line)) from None


def _refuse_duplicates(node: yaml.Node, file: Path, path: tuple = ()) -> None:
    if isinstance(node, yaml.MappingNode):
        first: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            line = key_node.start_mark.line + 1
            if key in first:
                raise ConfigError(f"key {key!r} is given twice, on lines {first[key]} and {line}; YAML would keep only "
                                  "the last one", fix="delete one of the two lines",
                                  location=Location(file=file, line=line, key=dotted((*path, key))))
            first[key] = line
            _refuse_duplicates(value_node, file, (*path, key))
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _refuse_duplicates(item, file, (*path, index))


def _document(node: yaml.Node, file: Path) -> ComponentDoc:
    line = node.start_mark.line + 1
    if not isinstance(node, yaml.MappingNode):
        raise ConfigError("a component must be a mapping with `type:` and `attributes:`",
                          fix="start the document with `type: components.SlurmAssetComponent`",
                          location=Location(file=file, line=line))
    keys = {str(k.value): (k, v) for k, v in node.value}
    for key, (key_node, _) in keys.items():
        if key not in TOP_LEVEL_KEYS:
            near = difflib.get_close_matches(key, TOP_LEVEL_KEYS, n=1)
            hint = f"did you mean {near[0]!r}? " if near else ""
            raise ConfigError(f"unknown top-level key {key!r}",
                              fix=f"{hint}a component file has only: {', '.join(TOP_LEVEL_KEYS)}",
                              location=Location(file=file, line=key_node.start_mark.line + 1, key=key))
    if "type" not in keys:
        raise ConfigError("the component has no `type:`", fix="add `type: components.SlurmAssetComponent` "
                          "(or another component type, see `dg list components`)",
                          location=Location(file=file, line=line, key="type"))
    type_node = keys["type"][1]
    if not isinstance(type_node, yaml.ScalarNode) or not isinstance(scalar_value(type_node), str) or not type_node.value:
        raise ConfigError("`type` must be the name of a component type",
                          fix="such as components.SlurmAssetComponent (see `dg list components`)",
                          location=Location(file=file, line=type_node.start_mark.line + 1, key="type"))
    attributes = keys.get("attributes", (None, None))[1]
    return ComponentDoc(file=file, type_name=type_node.value, type_line=type_node.start_mark.line + 1,
                        attributes=attributes)


def unknown_type(doc: ComponentDoc, known: Sequence[str]) -> ConfigError:
    """The error for a component type that is not registered, with the closest registered one."""
    near = difflib.get_close_matches(doc.type_name, list(known), n=1, cutoff=0.6)
    hint = f"did you mean {near[0]}? " if near else ""
    listing = f"registered types: {', '.join(known)} " if 0 < len(known) <= 8 else ""
    return ConfigError(f"unknown component type {doc.type_name!r}",
                       fix=f"{hint}{listing}(see `dg list components`)",
                       location=Location(file=doc.file, line=doc.type_line, key="type"))
