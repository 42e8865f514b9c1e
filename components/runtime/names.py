"""Names the orchestrator and the runtime share, importable without metaxy, polars or docling.

The Dagster process imports this at definitions load, in every step process: keeping it free of
heavy imports keeps a step's start-up short (see bench/local_step.py).
"""

from __future__ import annotations

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
