"""Code location entry point: every component instance under defs/."""

from pathlib import Path

import dagster as dg

from components.core.graph_check import check_graph
from components.defs_check import defs_error


@dg.definitions
def defs() -> dg.Definitions:
    # Our own check first: dagster reports many YAML mistakes vaguely, or not at all.
    error = defs_error(Path(__file__).parent)
    if error is not None:
        raise error from None
    return check_graph(dg.load_from_defs_folder(path_within_project=Path(__file__).parent))
