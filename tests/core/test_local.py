"""Local execution through Pipes on a real Dagster instance: metadata, logs, checks, failures."""

from __future__ import annotations

import os

import pytest

from components.core.run_metadata import RUN_KEYS
from tests.conftest import copy_project, materialize as _materialize


@pytest.fixture
def project(tmp_path):
    return copy_project(tmp_path)


def test_example_materializes_with_pipes_metadata_logs_and_check(project, monkeypatch):
    result, instance = _materialize(project, ["raw/numbers", "stats/summary"], monkeypatch)
    assert result.success
    mats = {
        e.asset_key.to_user_string(): e.step_materialization_data.materialization
        for e in result.get_asset_materialization_events()
    }
    numbers = mats["raw/numbers"].metadata
    assert numbers["rows"].value == 5000
    assert 45 < numbers["mean"].value < 55
    assert numbers["cluster"].value == "local"
    assert numbers["exit_code"].value == 0
    # The keys a Slurm run of the same asset records (tests/integration/test_slurm_asset_remote.py).
    assert set(RUN_KEYS) <= set(numbers), set(RUN_KEYS) - set(numbers)
    assert 0 < numbers["cpu_efficiency"].value < 2 and numbers["max_rss_mb"].value > 1
    assert numbers["slurm_job_id"].value == "n/a: local run, no Slurm job"
    assert numbers["job_script"].value.startswith("```bash\n") and "draw_numbers.py" in numbers["job_script"].value
    assert "stats/summary" in mats
    checks = [e.asset_check_evaluation_data for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
    assert [(c.check_name, c.passed) for c in checks] == [("values_in_range", True)]
    logs = [r.user_message for r in instance.all_logs(result.run_id)]
    assert any("wrote 5000 numbers" in m for m in logs), "the workload's pipes log line reached Dagster"
    assert (project / ".hpc" / "data" / "stats" / "summary.txt").read_text().startswith("count=5000")
    # Job directories of successful runs are cleaned up; their parent stays private.
    jobs = project / ".hpc" / "jobs"
    assert list(jobs.iterdir()) == []
    assert oct(jobs.stat().st_mode & 0o777) == "0o700"


def test_failing_workload_fails_the_step_with_exit_code_and_stderr(project, monkeypatch):
    (project / "workloads" / "draw_numbers.py").write_text(
        "import sys\nprint('about to fail', file=sys.stderr)\nprint('disk quota exceeded', file=sys.stderr)\nsys.exit(3)\n"
    )
    result, _ = _materialize(project, ["raw/numbers"], monkeypatch)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    error = failure.step_failure_data.error
    text = error.message if error.cause is None else error.message + (error.cause.message or "")
    assert "exited with code 3" in text
    assert "disk quota exceeded" in text
    meta = failure.step_failure_data.user_failure_data.metadata
    assert meta["exit_code"].value == 3
    # A failed job keeps its directory (0700) for inspection.
    job_dir = meta["job_dir"].value
    assert os.path.isdir(job_dir) and oct(os.stat(job_dir).st_mode & 0o777) == "0o700"


def test_secrets_are_forwarded_not_written(project, monkeypatch):
    defs_yaml = project / "defs" / "numbers" / "defs.yaml"
    defs_yaml.write_text(defs_yaml.read_text().replace("  env:\n", "  forward_env: [API_TOKEN]\n  env:\n"))
    (project / "workloads" / "draw_numbers.py").write_text(
        "import os, pathlib\n"
        "from dagster_pipes import open_dagster_pipes\n"
        "with open_dagster_pipes() as p:\n"
        "    script = pathlib.Path('job.sh').read_text()\n"
        "    p.report_asset_materialization(metadata={'token_seen': os.environ['API_TOKEN'] == 's3cret', 'in_script': 's3cret' in script})\n"
    )
    monkeypatch.setenv("API_TOKEN", "s3cret")
    result, instance = _materialize(project, ["raw/numbers"], monkeypatch)
    assert result.success
    meta = result.get_asset_materialization_events()[0].step_materialization_data.materialization.metadata
    assert meta["token_seen"].value is True
    assert meta["in_script"].value is False
    assert not any("s3cret" in str(value.value) for value in meta.values())
    assert not any("s3cret" in (r.user_message or "") for r in instance.all_logs(result.run_id))


def test_a_10mb_stderr_line_is_cut_in_the_failure(project, monkeypatch):
    (project / "workloads" / "draw_numbers.py").write_text("import sys\nsys.stderr.write('E' * 10_000_000 + '\\n')\nsys.exit(1)\n")
    result, _ = _materialize(project, ["raw/numbers"], monkeypatch)
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    text = failure.step_failure_data.error.message
    assert "exited with code 1" in text and "MB cut]" in text and len(text) < 50_000
    assert len(failure.step_failure_data.user_failure_data.metadata["stderr_tail"].value) < 50_000
