"""What YAML 1.1 makes of an unquoted scalar, and whether that silently changes what the user typed.

dagster reads defs.yaml with PyYAML's SafeLoader (YAML 1.1, timestamps left as text): `no` and `on`
become booleans, `1.10` the float 1.1, `1:30:00` the integer 5400 (base 60), `0x1F` the integer 31,
`~` null. Where an attribute means text, such a value would reach the job changed; this module
tells which plain scalars are safe to take as text and which the user must quote.
"""

from __future__ import annotations

from typing import Any

import yaml

from components.core.yamlio import _UniqueKeyLoader

_TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"


class DefsLoader(_UniqueKeyLoader):
    """Resolves plain scalars as dagster's loader does (no timestamps) and refuses duplicate keys."""


# A copy of the resolver table without timestamps, so the base loaders keep theirs.
DefsLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _TIMESTAMP_TAG]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def scalar_value(node: yaml.ScalarNode) -> Any:
    """The Python value YAML gives a scalar node composed with DefsLoader (str, int, float, bool, None)."""
    return DefsLoader("").construct_object(node, deep=True)


def is_plain(node: yaml.Node) -> bool:
    """True for an unquoted, untagged scalar: the only kind YAML reinterprets."""
    return isinstance(node, yaml.ScalarNode) and node.style is None


def changed_text(node: yaml.ScalarNode) -> tuple[Any, str] | None:
    """For a plain scalar whose YAML value, written back as text, differs from what was typed.

    Returns (value, description) such as (5400, "the integer 5400") or (False, "the boolean false");
    None when the scalar reads as the same text (strings, 5000, 0.5).
    """
    if not is_plain(node):
        return None
    value = scalar_value(node)
    if isinstance(value, str):
        return None
    if isinstance(value, bool):
        return value, f"the boolean {str(value).lower()}"
    if value is None:
        return value, "null (no value)"
    if isinstance(value, (int, float)) and str(value) == node.value:
        return None
    kind = "integer" if isinstance(value, int) else "number"
    return value, f"the {kind} {value!r}"


def quoted(text: str) -> str:
    """The typed text as a double-quoted YAML scalar, ready to paste."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
