"""How a Metaxy step reports data the runtime refused: the recorded message, never a traceback."""

from __future__ import annotations

import json

from components.core.feature_steps import LocalSteps, workload_data_failure
from components.runtime.names import DATA_ERROR_FILE


def test_a_recorded_refusal_becomes_the_failure_with_its_fix(tmp_path):
    steps = LocalSteps(tmp_path / "staging")
    assert workload_data_failure("t/crop", steps.data_error()) is None  # nothing refused: the real failure stands
    (tmp_path / "staging" / DATA_ERROR_FILE).write_text(json.dumps({"problem": "t/crop: bad ids", "fix": "write fewer", "written": 0}))
    failure = workload_data_failure("t/crop", steps.data_error())
    assert failure.description == "t/crop: bad ids\n  fix: write fewer\nnothing was written to the store for t/crop"


def test_rows_written_before_the_refusal_are_not_called_unwritten():
    failure = workload_data_failure("t/crop", json.dumps({"problem": "p", "fix": "f", "written": 4}))
    assert "nothing was written" not in failure.description and "4 row(s) written before them" in failure.description


def test_an_unreadable_record_leaves_the_workloads_own_failure():
    assert workload_data_failure("t/crop", '{"problem": ') is None
    assert workload_data_failure("t/crop", '{"fix": "f"}') is None
