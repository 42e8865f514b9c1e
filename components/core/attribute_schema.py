"""The JSON schema of component attributes made to give `dg check yaml` and editors useful errors.

dagster lets every attribute also be a template string, so a nested model's schema is
anyOf[model, string]: jsonschema then reports a typo inside `resources` only as "... is not valid
under any of the given schemas". Written as if/then/else (a mapping must match the model,
anything else must be a string) it reports the inner error with its own path.
Text attributes also accept numbers, booleans and null in the schema, so that the load-time check
(core.attributes) can say what YAML made of an unquoted scalar and that it must be quoted.
"""

from __future__ import annotations

import copy
from collections.abc import Collection
from typing import Any

_JSON_TYPE_OF_SHAPE = {"object": "object", "array": "array"}
_SCALARS = ["string", "number", "boolean", "null"]


def sharpen(schema: dict, lenient_defs: Collection[str] | None = None) -> dict:
    """A copy of a pydantic JSON schema with template alternatives as if/then/else and lenient text.

    Input and output are JSON-schema dicts (Draft 2020-12); nothing is removed that a valid
    defs.yaml needs, so a file that passed before passes after. Text is made lenient in the top-level
    properties and in the `$defs` named in lenient_defs (all when None): the models whose attributes
    the load-time check walks; others (dagster's asset specs) keep "must be a string".
    """
    out = copy.deepcopy(schema)
    for name, definition in list(out.get("$defs", {}).items()):
        out["$defs"][name] = _walk(definition, lenient_defs is None or name in lenient_defs)
    for key, value in out.items():
        if key != "$defs":
            out[key] = _walk(value, True)
    return out


def _walk(node: Any, widen: bool) -> Any:
    if isinstance(node, list):
        return [_walk(item, widen) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: _walk(value, widen) for key, value in node.items()}
    any_of = node.get("anyOf")
    if isinstance(any_of, list) and any_of and all(set(o) == {"type"} for o in any_of):
        # anyOf of bare types says only "not valid under any of the given schemas": one type list names them.
        types = [t for o in any_of for t in (o["type"] if isinstance(o["type"], list) else [o["type"]])]
        node.pop("anyOf")
        node["type"] = [t for t in dict.fromkeys(types) if not (t == "integer" and "number" in types)]
        return node
    if isinstance(any_of, list) and len(any_of) == 2 and any_of[1] in ({"type": "string"}, {"type": _SCALARS}):
        shaped = _shape(any_of[0])
        if shaped is not None:
            rest = {key: value for key, value in node.items() if key != "anyOf"}
            return {**rest, "if": {"type": shaped}, "then": any_of[0], "else": {"type": "string"}}
    if widen and node.get("type") == "string" and not {"enum", "const", "pattern"} & set(node):
        node["type"] = list(_SCALARS)
    return node


def _shape(option: dict) -> str | None:
    if "$ref" in option:
        return "object"  # our nested attribute models
    return _JSON_TYPE_OF_SHAPE.get(option.get("type"))
