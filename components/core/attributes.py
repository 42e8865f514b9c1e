"""Component attributes in defs.yaml checked against the component's pydantic model, node by node.

dagster validates attributes against a derived model where every field also accepts a template
string, so a typo inside `resources` or a word where a number belongs ends in "is not valid under
any of the given schemas" or a traceback. Walking the YAML nodes alongside the model's field types
gives each mistake its own line, key, the accepted values and the closest match, and catches
plain scalars that YAML 1.1 would silently turn into something else (see core.yaml_scalars).
Types the walker does not know (dagster's AssetSpec, Any) are left to dagster.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel

from components.core.errors import ConfigError, Location
from components.core.yamlio import KeyPath, dotted
from components.core.yaml_scalars import changed_text, is_plain, quoted, scalar_value

_BOOL_WORDS = {"true", "false", "yes", "no", "on", "off", "1", "0", "t", "f", "y", "n"}


def check_attributes(node: yaml.Node, model: type[BaseModel], file: Path,
                     path: KeyPath = ("attributes",)) -> list[ConfigError]:
    """Every mistake in one component's `attributes` node, in file order.

    node: the composed YAML node of `attributes`; model: the component class (a pydantic model
    whose fields carry the resolved types: str, int, Literal, nested models, lists, dicts).
    Returns ConfigErrors located at file:line with the dotted key; an empty list when all is well.
    """
    walker = _Walker(file)
    walker.model(node, model, path)
    return walker.errors


def closest(word: str, choices: Sequence[str]) -> str | None:
    """The choice nearest to a misspelled word, or None when nothing is close."""
    found = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return found[0] if found else None


class _Walker:
    def __init__(self, file: Path):
        self.file = file
        self.errors: list[ConfigError] = []

    def fail(self, node: yaml.Node, path: KeyPath, problem: str, fix: str | None = None) -> None:
        location = Location(file=self.file, line=node.start_mark.line + 1, key=dotted(path))
        self.errors.append(ConfigError(problem, fix=fix, location=location))

    # --- shapes ------------------------------------------------------------------------------

    def model(self, node: yaml.Node, model: type[BaseModel], path: KeyPath) -> None:
        if _is_template(node):
            return
        fields = {(info.alias or name): info for name, info in model.model_fields.items()}
        if not isinstance(node, yaml.MappingNode):
            if is_plain(node) and scalar_value(node) is None:
                return  # `resources:` with nothing after it: the defaults
            self.fail(node, path, f"must be a mapping of keys, not {_shape(node)}",
                      fix=f"write it as keys below {_name(path)}: {', '.join(fields)}")
            return
        seen = set()
        for key_node, value_node in node.value:
            key = str(key_node.value)
            seen.add(key)
            changed = changed_text(key_node) if key in fields else None
            if changed is not None:
                # `on:` as a key reaches dagster as True: the field would silently stay unset.
                self.fail(key_node, (*path, key), f"YAML reads the unquoted key {key} as {changed[1]}, "
                          "not as the text you typed", fix=f"quote it: {quoted(key)}:")
                continue
            if key not in fields:
                near = closest(key, list(fields))
                hint = f"did you mean {near!r}? " if near else ""
                self.fail(key_node, (*path, key), f"unknown key {key!r} in {_name(path)}",
                          fix=f"{hint}the keys of {_name(path)} are: {', '.join(fields)}")
                continue
            if getattr(_resolver(fields[key]), "model_field_type", None) is not None:
                continue  # the YAML shape is the resolver's own, not the field's type
            self.value(value_node, fields[key].annotation, (*path, key), fields[key])
        for key, info in fields.items():
            if info.is_required() and key not in seen:
                self.fail(node, (*path, key), f"{_name(path)} needs the key {key!r}",
                          fix=_describe(info) or f"add {key}: to {_name(path)}")

    def value(self, node: yaml.Node, annotation: Any, path: KeyPath, info: Any = None) -> None:
        if _is_template(node):
            return
        annotation = _strip_annotated(annotation)
        origin = typing.get_origin(annotation)
        if origin in (typing.Union, types.UnionType):
            self.union(node, typing.get_args(annotation), path, info)
        elif origin is Literal:
            self.literal(node, typing.get_args(annotation), path)
        elif origin in (list, tuple, Sequence, typing.get_origin(Sequence[int])):
            self.sequence(node, typing.get_args(annotation), path)
        elif origin in (dict, Mapping, typing.get_origin(Mapping[str, int])):
            self.mapping(node, typing.get_args(annotation), path)
        elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
            self.model(node, annotation, path)
        elif annotation in (str, int, float, bool):
            self.scalar(node, (annotation,), path, info)
        # Anything else (Any, dagster's specs) is dagster's to check.

    def union(self, node: yaml.Node, options: tuple, path: KeyPath, info: Any) -> None:
        options = tuple(_strip_annotated(o) for o in options)
        if type(None) in options and is_plain(node) and scalar_value(node) is None:
            return  # an explicit null for an optional attribute: its default
        rest = tuple(o for o in options if o is not type(None))
        if all(o in (str, int, float, bool) for o in rest):
            self.scalar(node, rest, path, info)
        elif len(rest) == 1:
            self.value(node, rest[0], path, info)

    def sequence(self, node: yaml.Node, args: tuple, path: KeyPath) -> None:
        if not isinstance(node, yaml.SequenceNode):
            self.fail(node, path, f"must be a list, not {_shape(node)}",
                      fix=f"write a list, one item per entry, such as {path[-1]}: [{_text(node) or '...'}]")
            return
        item = args[0] if args else Any
        for index, child in enumerate(node.value):
            self.value(child, item, (*path, index))

    def mapping(self, node: yaml.Node, args: tuple, path: KeyPath) -> None:
        if not isinstance(node, yaml.MappingNode):
            self.fail(node, path, f"must be a mapping of NAME: value, not {_shape(node)}",
                      fix=f"write one NAME: value per line below {_name(path)}:")
            return
        key_type, value_type = args if len(args) == 2 else (Any, Any)
        for key_node, value_node in node.value:
            key = str(key_node.value)
            if _strip_annotated(key_type) is str:
                self.scalar(key_node, (str,), (*path, key), None, what="name ")
            self.value(value_node, value_type, (*path, key))

    # --- scalars -----------------------------------------------------------------------------

    def literal(self, node: yaml.Node, choices: tuple, path: KeyPath) -> None:
        accepted = ", ".join(str(c) for c in choices)
        if not isinstance(node, yaml.ScalarNode):
            self.fail(node, path, f"must be one of {accepted}, not {_shape(node)}")
            return
        value = scalar_value(node)
        if value in choices and type(value) in {type(c) for c in choices}:
            return
        changed = changed_text(node)
        if changed and all(isinstance(c, str) for c in choices) and node.value in choices:
            self.fail(node, path, f"YAML reads the unquoted {node.value} as {changed[1]}, not as the text you typed",
                      fix=f"quote it: {quoted(node.value)}")
            return
        near = closest(str(node.value), [str(c) for c in choices])
        hint = f"did you mean {near!r}? " if near else ""
        self.fail(node, path, f"{node.value!r} is not an accepted value",
                  fix=f"{hint}accepted values: {accepted}")

    def scalar(self, node: yaml.Node, allowed: tuple, path: KeyPath, info: Any, what: str = "") -> None:
        wanted = _wanted(allowed)
        if not isinstance(node, yaml.ScalarNode):
            self.fail(node, path, f"must be {wanted}, not {_shape(node)}",
                      fix=_describe(info) or f"write one {'quoted text' if wanted == 'text' else wanted}")
            return
        value = scalar_value(node)
        if str in allowed:
            changed = changed_text(node)
            if changed is not None:
                self.fail(node, path, f"YAML reads the unquoted {what}{node.value} as {changed[1]}, "
                          "not as the text you typed", fix=f"quote it: {quoted(node.value)}")
                return
            if isinstance(value, str) or type(value) in allowed:
                return
            self.fail(node, path, f"must be text, but YAML reads the unquoted {node.value} as a number",
                      fix=f"quote it: {quoted(node.value)}" + _examples(info))
            return
        if _fits(value, allowed):
            return
        self.fail(node, path, f"must be {wanted}, not {node.value!r}",
                  fix=_describe(info) or f"write {wanted}")


def _fits(value: Any, allowed: tuple) -> bool:
    if isinstance(value, bool):
        return bool in allowed
    if isinstance(value, int):
        return int in allowed or float in allowed
    if isinstance(value, float):
        return float in allowed or (int in allowed and value.is_integer())
    if isinstance(value, str):
        text = value.strip()
        if bool in allowed and text.lower() in _BOOL_WORDS:
            return True
        for kind in (int, float):
            if kind in allowed:
                try:
                    kind(text)
                    return True
                except ValueError:
                    pass
    return False


def _wanted(allowed: tuple) -> str:
    if str in allowed:
        return "text"
    if allowed == (bool,):
        return "true or false"
    if allowed == (int,):
        return "a whole number"
    if float in allowed:
        return "a number"
    return "text"


def _strip_annotated(annotation: Any) -> Any:
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation


def _is_template(node: yaml.Node) -> bool:
    # "{{ env('X') }}" is resolved by dagster later; its value is unknown here.
    return isinstance(node, yaml.ScalarNode) and "{{" in str(node.value)


def _shape(node: yaml.Node) -> str:
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if is_plain(node) and scalar_value(node) is None:
        return "empty"
    return repr(node.value)


def _text(node: yaml.Node) -> str:
    return str(node.value) if isinstance(node, yaml.ScalarNode) else ""


def _name(path: KeyPath) -> str:
    return dotted(path[1:] if path and path[0] == "attributes" else path) or "attributes"


def _resolver(info: Any) -> Any:
    for meta in getattr(info, "metadata", ()) or ():
        if hasattr(meta, "description") and hasattr(meta, "examples"):
            return meta
    return None


def _describe(info: Any) -> str | None:
    resolver = _resolver(info)
    description = getattr(resolver, "description", None) or getattr(info, "description", None)
    if not description:
        return None
    return description + _examples(info)


def _examples(info: Any) -> str:
    examples = getattr(_resolver(info), "examples", None)
    if not examples:
        return ""
    plain = [str(e) for e in examples if not isinstance(e, (list, dict))]
    return f" (for example {', '.join(plain)})" if plain else ""
