"""Feature declarations across the project, validated as one graph before Metaxy sees them.

Each MetaxyFeatureComponent is loaded on its own, but a feature is only meaningful with its
upstream features; so every component reads all feature declarations under defs/ (their YAML,
cheaply) and checks the whole graph, pointing each problem at the file and line that causes it.
Metaxy itself silently ignores a field dep on a feature that is not a dependency, and maps
`a-b` and `a_b` to the same table; those and the rest are refused here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from components.core import documents
from components.core.errors import ConfigError, Location
from components.core.yamlio import KeyPath, LineMap, load_yaml
from components.runtime.names import COLUMN_TYPE_NAMES

METAXY_TYPE, DOCLING_TYPE = "components.MetaxyFeatureComponent", "components.RayDoclingComponent"
FEATURE_COMPONENT_TYPES = {METAXY_TYPE, DOCLING_TYPE}
KEY_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]*(/[a-z0-9][a-z0-9_-]*)*$")
NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
LINEAGES = ("identity", "aggregation", "expansion")


@dataclass
class FeatureDecl:
    """One feature as declared in a defs.yaml (attributes already parsed, lines remembered)."""

    key: str
    attributes: dict[str, Any]
    file: Path
    lines: LineMap | None = None
    prefix: KeyPath = ("attributes",)

    def where(self, *path: str | int):
        if self.lines is None:
            return Location(file=self.file, key=".".join(map(str, path)) or None)
        return self.lines.location((*self.prefix, *path))

    def error(self, problem: str, fix: str, *path: str | int) -> ConfigError:
        return ConfigError(problem, fix=fix, location=self.where(*path))

    @property
    def deps(self) -> list[dict]:
        return list(self.attributes.get("deps") or [])

    @property
    def fields(self) -> list[dict]:
        return list(self.attributes.get("fields") or [])

    @property
    def id_columns(self) -> list[str]:
        return list(self.attributes.get("id_columns") or [])

    @property
    def columns(self) -> dict[str, str]:
        return dict(self.attributes.get("columns") or {})

    def table_name(self) -> str:
        # Metaxy's table name: '/' becomes '__' and '-' becomes '_'.
        return self.key.replace("/", "__").replace("-", "_")

    def spec(self) -> dict:
        """The JSON spec the runtime builds a Metaxy feature from."""
        return {
            "key": self.key,
            "id_columns": self.id_columns,
            "columns": self.columns,
            "description": self.attributes.get("description"),
            "deps": [
                {k: v for k, v in dep.items() if k in ("feature", "select", "rename", "filters", "lineage", "optional")}
                for dep in self.deps
            ],
            "fields": [
                {"key": f["key"], "code_version": str(f.get("code_version", "1")),
                 **({"deps": f["deps"]} if f.get("deps") is not None else {})}
                for f in self.fields
            ],
        }


def _feature_docs(file: Path, branch=None) -> list[FeatureDecl]:
    try:
        data, lines = load_yaml(file)
    except ConfigError:
        return []  # a broken neighbour is reported when that component loads, not here
    if not isinstance(data, dict) or data.get("type") not in FEATURE_COMPONENT_TYPES:
        return []
    attributes = data.get("attributes") or {}
    if not isinstance(attributes, dict):
        return []
    if branch is not None:  # a core.branches.Branch: its `set` changes these attributes on its runs
        keys = list((attributes.get("features") or {}).values()) if data["type"] == DOCLING_TYPE else [attributes.get("feature")]
        attributes = branch.attributes(attributes, [k for k in keys if isinstance(k, str)])
    if data["type"] == DOCLING_TYPE:
        return [FeatureDecl(key=key, attributes=attrs, file=file, lines=lines, prefix=("attributes", *path))
                for key, attrs, path in documents.declarations(attributes)]
    key = attributes.get("feature")
    if not isinstance(key, str):
        return []
    return [FeatureDecl(key=key, attributes=attributes, file=file, lines=lines)]


def scan(defs_dir: Path, branch=None) -> list[FeatureDecl]:
    """Every feature declared under defs/, in a stable order; on `branch`, with its `set` applied."""
    out: list[FeatureDecl] = []
    for file in sorted(defs_dir.rglob("defs.yaml")):
        out.extend(_feature_docs(file, branch))
    return out


def _check_own(decl: FeatureDecl) -> None:
    if not KEY_PATTERN.match(decl.key):
        raise decl.error(f"feature key {decl.key!r} is not valid",
                         "use lower-case words joined by '/', such as media/crop", "feature")
    ids = decl.id_columns
    if not ids:
        raise decl.error("id_columns is empty", "name the column(s) that identify a sample, such as [sample_id]", "id_columns")
    seen: set[str] = set()
    for i, field_ in enumerate(decl.fields):
        fkey = field_.get("key")
        if fkey in seen:
            raise decl.error(f"field {fkey!r} is declared twice", "give each field its own key", "fields", i, "key")
        seen.add(fkey)
        if not isinstance(fkey, str) or not NAME_PATTERN.match(fkey):
            raise decl.error(f"field key {fkey!r} is not valid", "use a Python-like name: letters, digits, _", "fields", i, "key")
    if not decl.fields:
        raise decl.error("a feature needs at least one field", "add fields: [{key: default}]", "fields")
    for name, type_name in decl.columns.items():
        if type_name not in COLUMN_TYPE_NAMES:
            raise decl.error(f"column {name!r} has unknown type {type_name!r}",
                             f"use one of: {', '.join(COLUMN_TYPE_NAMES)}", "columns", name)
        if name in ids or name.startswith("metaxy_") or name == "hpc_status":
            raise decl.error(f"column {name!r} clashes with an id column or a reserved name",
                             "rename the column", "columns", name)


def _upstream_columns(up: FeatureDecl, dep: dict) -> set[str]:
    cols = set(up.columns) | set(up.id_columns)
    for old, new in (dep.get("rename") or {}).items():
        cols.discard(old)
        cols.add(new)
    return cols


def _check_deps(decl: FeatureDecl, by_key: dict[str, FeatureDecl]) -> None:
    dep_keys: list[str] = []
    for i, dep in enumerate(decl.deps):
        up_key = dep.get("feature")
        if up_key not in by_key:
            known = ", ".join(sorted(k for k in by_key if k != decl.key)) or "none"
            raise decl.error(f"upstream feature {up_key!r} is not declared in any defs.yaml",
                             f"declare it with a MetaxyFeatureComponent (or a RayDoclingComponent), or use one of: {known}", "deps", i, "feature")
        if up_key == decl.key:
            raise decl.error(f"{decl.key} depends on itself", "remove the dependency", "deps", i, "feature")
        if up_key in dep_keys:
            raise decl.error(f"{up_key} is listed twice in deps", "merge the two entries", "deps", i, "feature")
        dep_keys.append(up_key)
        up = by_key[up_key]
        for old in (dep.get("rename") or {}):
            if old not in set(up.columns) | set(up.id_columns):
                raise decl.error(f"rename: {up_key} has no column {old!r}",
                                 f"its columns are: {', '.join([*up.id_columns, *up.columns])}", "deps", i, "rename", old)
        available = _upstream_columns(up, dep)
        for col in dep.get("select") or []:
            if col not in available:
                raise decl.error(f"select: {up_key} has no column {col!r} (after rename)",
                                 f"choose from: {', '.join(sorted(available))}", "deps", i, "select")
        lineage = dep.get("lineage") or {"type": "identity"}
        if lineage.get("type") not in LINEAGES:
            raise decl.error(f"unknown lineage {lineage.get('type')!r}", f"use one of: {', '.join(LINEAGES)}", "deps", i, "lineage")
        for col in lineage.get("on") or []:
            if col not in available and col not in decl.id_columns:
                raise decl.error(f"lineage column {col!r} is in neither {up_key} nor this feature's ids",
                                 "name an id column", "deps", i, "lineage", "on")
    for i, field_ in enumerate(decl.fields):
        for j, fdep in enumerate(field_.get("deps") or []):
            up_key = fdep.get("feature")
            if up_key not in dep_keys:
                raise decl.error(
                    f"field {field_.get('key')!r} depends on {up_key!r}, which is not among this feature's deps",
                    f"add {{feature: {up_key}}} to deps, or correct the name (deps: {', '.join(dep_keys) or 'none'})",
                    "fields", i, "deps", j, "feature",
                )
            up_fields = [f.get("key") for f in by_key[up_key].fields]
            for name in fdep.get("fields") or []:
                if name not in up_fields:
                    raise decl.error(f"{up_key} has no field {name!r}",
                                     f"its fields are: {', '.join(up_fields)}", "fields", i, "deps", j, "fields")
        if field_.get("deps") is not None and not decl.deps:
            raise decl.error(f"field {field_.get('key')!r} has deps but the feature has no upstream features",
                             "remove the field deps or add deps", "fields", i, "deps")


def _cycle(by_key: dict[str, FeatureDecl], start: str) -> list[str] | None:
    path: list[str] = []
    on_path: set[str] = set()
    done: set[str] = set()

    def visit(key: str) -> list[str] | None:
        if key in on_path:
            return path[path.index(key):] + [key]
        if key in done or key not in by_key:
            return None
        path.append(key)
        on_path.add(key)
        for dep in by_key[key].deps:
            found = visit(dep.get("feature"))
            if found:
                return found
        path.pop()
        on_path.discard(key)
        done.add(key)
        return None

    return visit(start)


@dataclass
class FeatureGraph:
    """The validated declarations; `lineage(key)` is a feature and its upstream closure, upstream first."""

    decls: dict[str, FeatureDecl] = field(default_factory=dict)

    def lineage(self, key: str) -> list[FeatureDecl]:
        ordered: list[FeatureDecl] = []
        seen: set[str] = set()

        def visit(k: str) -> None:
            if k in seen:
                return
            seen.add(k)
            for dep in self.decls[k].deps:
                visit(dep["feature"])
            ordered.append(self.decls[k])

        visit(key)
        return ordered


def validate(decls: list[FeatureDecl], target: FeatureDecl) -> FeatureGraph:
    """Check the target against the whole project: unique keys and tables, known deps, no cycles."""
    by_key: dict[str, FeatureDecl] = {target.key: target}
    tables: dict[str, FeatureDecl] = {target.table_name(): target}
    for decl in decls:
        if decl.file.resolve() == target.file.resolve() and decl.key == target.key:
            continue
        if decl.key == target.key:
            raise target.error(f"feature {target.key!r} is also declared at {decl.where('feature')}",
                               "feature keys must be unique: rename one of them", "feature")
        if decl.table_name() == target.table_name():
            raise target.error(
                f"features {target.key!r} and {decl.key!r} (at {decl.where('feature')}) map to the same table {target.table_name()!r}",
                "Metaxy turns '-' into '_' and '/' into '__': rename one of them", "feature")
        # Clashes between two other features are reported when those components load.
        by_key.setdefault(decl.key, decl)
        tables.setdefault(decl.table_name(), decl)
    _check_own(target)
    _check_deps(target, by_key)
    cycle = _cycle(by_key, target.key)
    if cycle:
        raise target.error(f"feature dependencies form a cycle: {' -> '.join(cycle)}",
                           "remove one of these dependencies", "deps")
    for decl in FeatureGraph(by_key).lineage(target.key)[:-1]:
        try:
            _check_own(decl)
            _check_deps(decl, by_key)
        except ConfigError as exc:
            raise ConfigError(f"{exc.problem}\n  (upstream of {target.key})", fix=exc.fix, location=exc.location) from None
    return FeatureGraph(by_key)
