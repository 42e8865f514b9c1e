"""Code location entry point: every component instance under defs/."""

from pathlib import Path

import dagster as dg

from components.defs_check import load_checked


@dg.definitions
def defs() -> dg.Definitions:
    # Our checks name the defs.yaml line and the fix where dagster's report is vague or missing;
    # raised here, from one frame, a mistake reads as our message instead of a stack trace.
    loaded, mistake = load_checked(Path(__file__).parent)
    if mistake is not None:
        raise mistake from None
    return loaded
