"""The steps the orchestrator runs where the store is, by name (CLI and in-process runner alike)."""

from __future__ import annotations

from .branch_steps import STEPS as BRANCH_STEPS
from .documents import list_step
from .increment import commit, ingest, resolve

STEPS = {"resolve": resolve, "ingest": ingest, "commit": commit, "list-documents": list_step, **BRANCH_STEPS}
