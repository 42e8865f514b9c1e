"""Names the orchestrator and the runtime share, importable without metaxy, polars or docling.

The Dagster process imports this at definitions load, in every step process: keeping it free of
heavy imports keeps a step's start-up short (see bench/local_step.py).
"""

from __future__ import annotations

import re

# The variable that tells a Metaxy workload where its request (increment, fields, store) lies.
REQUEST_ENV = "HPC_METAXY_REQUEST"

# Left in the staging directory by a workload whose results the runtime refused ({problem, fix, written}):
# the step fails with that message instead of the workload's traceback.
DATA_ERROR_FILE = "data-error.json"

# Column types a YAML author may name; runtime.graph maps each to a Python type and a Polars dtype.
COLUMN_TYPE_NAMES = ("str", "int", "float", "bool", "date", "datetime", "bytes", "list[str]", "list[int]", "list[float]")

# Docling input formats RayDoclingComponent offers, with the file suffixes that select them.
FORMATS: dict[str, tuple[str, ...]] = {
    "pdf": (".pdf",),
    "docx": (".docx",),
    "pptx": (".pptx",),
    "xlsx": (".xlsx",),
    "html": (".html", ".htm"),
    "md": (".md", ".markdown"),
    "asciidoc": (".adoc", ".asciidoc"),
    "csv": (".csv",),
}

# A branch's name (branches.yaml, $HPC_BRANCH, run tag hpc/branch): it becomes part of paths.
BRANCH_NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
BRANCHES_SUFFIX = ".branches"


def beside(path: str, name: str) -> str:
    """Branch `name`'s copy of a folder `path` (a Delta store, an output directory): PATH.branches/NAME."""
    return f"{path.rstrip('/')}{BRANCHES_SUFFIX}/{name}"
