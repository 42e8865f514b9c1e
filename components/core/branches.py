"""Branches as the project declares them in branches.yaml, and the branch a run is on.

    # branches.yaml, beside pyproject.toml
    ocr-test:
      description: OCR on scanned pages, tried on two documents first
      subset:                       # the root features' samples the branch runs on (all parts narrow it)
        ids: [scan-1.pdf, scan-2.pdf]
        where: "format = 'pdf'"     # a filter on the root features' columns (SQL, as Metaxy's filters)
        fraction: 0.1               # a seeded share of the ids: the same samples on every run
        seed: 7
      set:                          # attributes this branch changes, per feature key (merged into defs.yaml's)
        documents/markdown:
          docling: {ocr: true}

A run is on a branch when its tag `hpc/branch` (the UI's launchpad: Edit tags) or, for a run
started without that tag, the variable $HPC_BRANCH names one. Its Metaxy features then write to the
branch's store beside main's (runtime.branches); `hpc branch diff|merge|drop` act on it.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from components.core.errors import ConfigError, Location
from components.core.yamlio import LineMap, load_yaml
from components.runtime.names import BRANCH_NAME_PATTERN

BRANCHES_FILE = "branches.yaml"
BRANCH_TAG = "hpc/branch"
BRANCH_ENV = "HPC_BRANCH"
KEYS = ("description", "subset", "set")
SUBSET_KEYS = ("ids", "where", "fraction", "seed")
# What a branch may not change: it must write the same features, identified alike, to the same store.
FIXED_ATTRIBUTES = ("feature", "features", "id_columns", "store", "cluster", "type")


@dataclass
class Branch:
    """One declared branch: `subset` (None: every sample) and `set` ({feature key: attributes})."""

    name: str
    description: str | None = None
    subset: dict | None = None
    set: dict[str, dict] = field(default_factory=dict)
    file: Path | None = None
    lines: LineMap | None = None

    def where(self, *path: str | int) -> Location:
        if self.lines is None:
            return Location(file=self.file, key=".".join(map(str, (self.name, *path))))
        return self.lines.location((self.name, *path))

    def request(self) -> dict:
        """What the runtime keeps in the branch's record."""
        return {"name": self.name, "subset": self.subset, "set": self.set}

    def attributes(self, attributes: dict, keys: list[str]) -> dict:
        """A component's attributes on this branch: the `set` entries of its feature keys merged in."""
        out = attributes
        for key in keys:
            if key in self.set:
                out = deep_merge(out, self.set[key])
        return out


def deep_merge(base: dict, over: dict) -> dict:
    """`base` with `over` merged in: mappings merge key by key, anything else replaces."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _error(lines: LineMap | None, file: Path, problem: str, fix: str, *path: str | int) -> ConfigError:
    location = lines.location(path) if lines is not None else Location(file=file, key=".".join(map(str, path)))
    return ConfigError(problem, fix=fix, location=location)


def _subset(raw: Any, name: str, file: Path, lines: LineMap | None) -> dict | None:
    if raw is None:
        return None
    if not isinstance(raw, dict) or not raw:
        raise _error(lines, file, "subset must be a mapping with ids, where and/or fraction",
                     "for example subset: {ids: [report-4.pdf]} or {fraction: 0.1, seed: 7}", name, "subset")
    for key in raw:
        if key not in SUBSET_KEYS:
            raise _error(lines, file, f"unknown subset key {key!r}", f"use {', '.join(SUBSET_KEYS)}", name, "subset", key)
    ids = raw.get("ids")
    if ids is not None and (not isinstance(ids, list) or not ids or not all(isinstance(i, str | int) for i in ids)):
        raise _error(lines, file, "subset.ids must be a non-empty list of sample ids", "for example ids: [report-4.pdf, report-6.pdf]",
                     name, "subset", "ids")
    fraction = raw.get("fraction")
    if fraction is not None and (isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0 < fraction <= 1):
        raise _error(lines, file, f"subset.fraction must be a number in (0, 1], not {fraction!r}", "for example fraction: 0.1",
                     name, "subset", "fraction")
    if "seed" in raw and (isinstance(raw["seed"], bool) or not isinstance(raw["seed"], int)):
        raise _error(lines, file, f"subset.seed must be an integer, not {raw['seed']!r}", "for example seed: 7", name, "subset", "seed")
    if "seed" in raw and fraction is None:
        raise _error(lines, file, "subset.seed without subset.fraction has no effect", "add fraction: or remove seed:",
                     name, "subset", "seed")
    where = raw.get("where")
    if where is not None:
        if not isinstance(where, str) or not where.strip():
            raise _error(lines, file, "subset.where must be a filter such as \"format = 'pdf'\"", "write it as a quoted string",
                         name, "subset", "where")
        try:
            from metaxy.models.filter_expression import parse_filter_string

            parse_filter_string(where)
        except Exception as exc:  # sqlglot's and Metaxy's parse errors alike
            raise _error(lines, file, f"subset.where {where!r} is not a filter Metaxy can read: {str(exc).splitlines()[0]}",
                         "write a SQL condition on the root features' columns, such as \"format = 'pdf' AND bytes < 1000000\"",
                         name, "subset", "where") from None
    return dict(raw)


def _set(raw: Any, name: str, file: Path, lines: LineMap | None) -> dict[str, dict]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise _error(lines, file, "set must map feature keys to the attributes the branch changes",
                     "for example set: {documents/markdown: {docling: {ocr: true}}}", name, "set")
    for key, attributes in raw.items():
        if not isinstance(attributes, dict) or not attributes:
            raise _error(lines, file, f"set.{key} must be a mapping of attributes", "for example {docling: {ocr: true}}",
                         name, "set", key)
        for attribute in attributes:
            if attribute in FIXED_ATTRIBUTES:
                raise _error(lines, file, f"a branch cannot change {attribute}: its rows must land in the same features and store",
                             "change it in defs.yaml on main instead", name, "set", key, attribute)
    return dict(raw)


def load_branches(project_root: Path) -> dict[str, Branch]:
    """Every branch branches.yaml declares ({} without the file). Raises ConfigError at the bad key."""
    file = project_root / BRANCHES_FILE
    if not file.is_file():
        return {}
    data, lines = load_yaml(file)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError("branches.yaml must map branch names to their subset and set",
                          fix="see the example at the top of the shipped branches.yaml", location=Location(file=file))
    out = {}
    for name, body in data.items():
        if not isinstance(name, str) or not BRANCH_NAME_PATTERN.match(name):
            raise _error(lines, file, f"branch name {name!r} is not valid",
                         "use lower-case letters, digits, '.', '_' or '-' (at most 63), such as ocr-test", str(name))
        body = body or {}
        if not isinstance(body, dict):
            raise _error(lines, file, f"branch {name} must be a mapping", f"give it {', '.join(KEYS)}", name)
        for key in body:
            if key not in KEYS:
                raise _error(lines, file, f"unknown key {key!r} in branch {name}", f"use {', '.join(KEYS)}", name, key)
        out[name] = Branch(name=name, description=body.get("description"), subset=_subset(body.get("subset"), name, file, lines),
                           set=_set(body.get("set"), name, file, lines), file=file, lines=lines)
    return out


def branch_named(project_root: Path, name: str, given_as: str) -> Branch:
    """The declared branch `name`. Raises ConfigError naming where the name came from and the known ones."""
    branches = load_branches(project_root)
    if name not in branches:
        known = ", ".join(sorted(branches)) or "none yet"
        raise ConfigError(f"branch {name!r} ({given_as}) is not declared in {BRANCHES_FILE}",
                          fix=f"declare it there (a subset and what it changes; both optional), or use one of: {known}",
                          location=Location(file=project_root / BRANCHES_FILE))
    return branches[name]


def run_branch(tags: dict[str, str], project_root: Path) -> Branch | None:
    """The branch a run is on: its `hpc/branch` tag, else $HPC_BRANCH; None for main.

    A tag and a variable naming different branches is refused: one run never writes to two.
    """
    tag, env = (tags or {}).get(BRANCH_TAG) or None, os.environ.get(BRANCH_ENV) or None
    if tag and env and tag != env:
        raise ConfigError(f"the run's tag {BRANCH_TAG}={tag} and ${BRANCH_ENV}={env} name different branches",
                          fix=f"unset {BRANCH_ENV} in the environment of `dg dev`, or launch the run with the same branch")
    if tag:
        return branch_named(project_root, tag, f"run tag {BRANCH_TAG}")
    if env:
        return branch_named(project_root, env, f"${BRANCH_ENV}")
    return None
