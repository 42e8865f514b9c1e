"""Results a workload reports that its defs.yaml does not declare, on a real local run."""

from __future__ import annotations

import pytest

from tests.conftest import copy_project, materialize as _materialize, step_failures

CHECK = '        pipes.report_asset_check(\n            check_name="values_in_range",'


@pytest.fixture
def project(tmp_path):
    return copy_project(tmp_path)


def _report_first(project, call: str) -> None:
    workload = project / "workloads" / "draw_numbers.py"
    text = workload.read_text()
    assert CHECK in text
    workload.write_text(text.replace(CHECK, f"        {call}\n{CHECK}"))


def test_an_undeclared_check_names_the_check_and_the_defs_yaml_and_records_nothing(project, monkeypatch):
    _report_first(project, 'pipes.report_asset_check(check_name="no_negatives", passed=True)')
    result, _ = _materialize(project, ["raw/numbers"], monkeypatch)
    assert not result.success
    text = step_failures(result)
    assert "workloads/draw_numbers.py reported check 'no_negatives' on raw/numbers" in text, text
    assert "defs/numbers/defs.yaml:10 does not declare (it declares: values_in_range)" in text
    assert "- asset: raw/numbers\n        name: no_negatives" in text
    assert "Received unexpected AssetCheckResult" not in text
    assert result.get_asset_materialization_events() == []  # nothing half-recorded



def test_a_close_misspelling_is_pointed_at(project, monkeypatch):
    _report_first(project, 'pipes.report_asset_check(check_name="value_in_range", passed=True)')
    result, _ = _materialize(project, ["raw/numbers"], monkeypatch)
    assert "did you mean 'values_in_range'?" in step_failures(result)

