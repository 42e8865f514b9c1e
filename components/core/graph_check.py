"""The asset graph checked after dagster loaded every defs.yaml: each dep declared, each key declared once.

Dagster accepts a dep on a key nobody declares (it draws a ghost asset: a typo passes `dg check
defs`) and reports a key declared twice as "Duplicate asset key" without saying where. Here every
asset key is traced back to the defs.yaml (file:line) that declared it, through the code references
dagster attaches to assets built from YAML, so both mistakes name the files to edit.

An asset made outside this project is declared as an external asset: a `dg.AssetSpec` in a Python
file under defs/ (see README, "Assets made outside this project").
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg

from components.core.errors import ConfigError, Location
from components.core.yamlio import KeyPath, dotted, load_yaml

CODE_REFERENCES = "dagster/code_references"
EXTERNAL_HINT = ("if it is made outside this project, declare it as an external asset: `{name} = dg.AssetSpec({path})` "
                 "in a Python file under defs/, such as defs/external.py (README: Assets made outside this project)")


@dataclass(frozen=True)
class Declared:
    """One asset spec as loaded: its key, its deps, and the file that declared it (None for Python code)."""

    key: dg.AssetKey
    deps: tuple[dg.AssetKey, ...]
    source: Path | None
    line: int | None


def check_graph(defs: dg.Definitions) -> dg.Definitions:
    """Return `defs` unchanged when every dep names a declared asset and no key is declared twice.

    Raises ConfigError listing every unknown dep (file:line of the dep, closest keys) and every
    duplicate key (every file that declares it).
    """
    declared = list(declared_assets(defs))
    errors = duplicate_keys(declared) + unknown_deps(declared)
    if len(errors) == 1:
        raise errors[0]
    if errors:
        listing = "\n".join(f"- {error}".replace("\n", "\n  ") for error in errors)
        raise ConfigError(f"{len(errors)} problems in the asset graph under defs/:\n{listing}")
    return defs


def declared_assets(defs: dg.Definitions) -> Iterator[Declared]:
    """Every asset spec in `defs`: materializable, external (AssetSpec) and source assets alike."""
    seen: set[int] = set()
    for item in defs.assets or ():
        if id(item) in seen:
            continue  # dagster lists an object found through two module paths twice; it is one asset
        seen.add(id(item))
        if isinstance(item, dg.AssetsDefinition):
            specs: Iterable[Any] = item.specs
        elif isinstance(item, dg.SourceAsset):
            yield Declared(item.key, (), None, None)
            continue
        elif isinstance(item, dg.AssetSpec):
            specs = [item]
        else:
            continue  # cacheable definitions resolve later; dagster checks those itself
        for spec in specs:
            source, line = _source(spec.metadata or {})
            yield Declared(spec.key, tuple(dep.asset_key for dep in spec.deps), source, line)


def duplicate_keys(declared: list[Declared]) -> list[ConfigError]:
    """One error per key declared more than once, naming every file (and line) that declares it."""
    by_key: dict[dg.AssetKey, list[Declared]] = {}
    for item in declared:
        by_key.setdefault(item.key, []).append(item)
    errors = []
    for key, items in by_key.items():
        if len(items) < 2:
            continue
        name = key.to_user_string()
        places = [_key_location(item, name) for item in items]
        others = " and ".join(str(place) or "Python code under defs/" for place in places[1:])
        errors.append(ConfigError(
            f"asset key {name} is declared here and again in {others}",
            fix="give each asset its own key (or delete the copied defs.yaml); one key is one asset",
            location=places[0],
        ))
    return errors


def unknown_deps(declared: list[Declared]) -> list[ConfigError]:
    """One error per dep on a key that no asset declares, at the dep's line, with the closest keys."""
    known = {item.key for item in declared}
    names = sorted(key.to_user_string() for key in known)
    errors = []
    for item in declared:
        for dep in item.deps:
            if dep in known:
                continue
            dep_name = dep.to_user_string()
            close = difflib.get_close_matches(dep_name, names, n=3, cutoff=0.6)
            fix = (f"did you mean {' or '.join(close)}? " if close else "") + EXTERNAL_HINT.format(
                name="_".join(dep.path).replace("-", "_"), path=list(dep.path))
            errors.append(ConfigError(
                f"{item.key.to_user_string()} depends on {dep_name}, which no asset in this project declares",
                fix=fix,
                location=_value_location(item, dep_name, prefer="deps"),
            ))
    return errors


def asset_source(spec: dg.AssetSpec) -> tuple[Path | None, int | None]:
    """(defs.yaml, line of its component) that declared an asset spec; (None, None) for Python code."""
    return _source(spec.metadata or {})


def _source(metadata) -> tuple[Path | None, int | None]:
    references = metadata.get(CODE_REFERENCES)
    for reference in getattr(references, "code_references", None) or ():
        file = getattr(reference, "file_path", None)
        if file and str(file).endswith((".yaml", ".yml")):
            return Path(file), getattr(reference, "line_number", None)
    return None, None


def _key_location(item: Declared, name: str) -> Location:
    return _value_location(item, name, prefer="key")


def _value_location(item: Declared, value: str, *, prefer: str) -> Location:
    """Where `value` is written in the declaring file, preferring a key path through `prefer`."""
    if item.source is None:
        return Location()
    try:
        data, lines = load_yaml(item.source)
    except ConfigError:
        return Location(file=item.source, line=item.line)  # several documents: the component's line
    paths = [path for path, found in _scalars(data, ()) if found == value]
    paths.sort(key=lambda path: prefer not in path)
    if not paths:
        return Location(file=item.source, line=item.line)
    return Location(file=item.source, line=lines.line_of(paths[0]), key=dotted(paths[0]))


def _scalars(data: Any, prefix: KeyPath) -> Iterator[tuple[KeyPath, Any]]:
    if isinstance(data, dict):
        for key, value in data.items():
            yield from _scalars(value, (*prefix, str(key)))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            yield from _scalars(value, (*prefix, index))
    else:
        yield prefix, data
