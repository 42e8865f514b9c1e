"""The runtime steps on real stores on disk (Delta and DuckDB): what the job and login node run."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import polars as pl
import pytest

from components.runtime import increment
from components.runtime.job import FeatureJob

ROOT = {"key": "t/source", "id_columns": ["sample_id"], "columns": {"path": "str"},
        "fields": [{"key": "frames"}, {"key": "audio"}]}
DOWN = {"key": "t/crop", "id_columns": ["sample_id"], "columns": {"width": "int"},
        "deps": [{"feature": "t/source"}],
        "fields": [{"key": "image", "deps": [{"feature": "t/source", "fields": ["frames"]}]}]}


@pytest.fixture(params=["delta", "duckdb"])
def store(request, tmp_path):
    suffix = ".duckdb" if request.param == "duckdb" else ""
    return {"kind": request.param, "path": str(tmp_path / f"store{suffix}")}


def _request(store, staging, target, orphans="keep"):
    return {"target": target["key"], "specs": [ROOT] if target is ROOT else [ROOT, DOWN],
            "store": store, "staging": str(staging), "orphans": orphans}


def _list(store, staging, ids, frames="f1"):
    for old in staging.glob("samples*.parquet"):
        old.unlink()
    job = FeatureJob(_request(store, staging, ROOT))
    job.emit(pl.DataFrame({"sample_id": ids, "path": ids, "f": [frames] * len(ids), "a": ["a"] * len(ids)}),
             provenance={"frames": "f", "audio": "a"})
    return increment.ingest(_request(store, staging, ROOT))


def _compute(store, staging, only=None):
    req = _request(store, staging, DOWN)
    summary = increment.resolve(req)
    job = FeatureJob(req)
    samples = job.samples()
    if only is not None:
        samples = samples.filter(pl.col("sample_id").is_in(only))
    job.write(samples.select("sample_id", width=pl.lit(3)))
    return summary, increment.commit(req)


def test_increment_round_trip_on_both_embedded_stores(store, tmp_path):
    staging = tmp_path / "staging"
    staging.mkdir()
    assert _list(store, staging, ["a", "b"])["new"] == 2
    summary, after = _compute(store, staging)
    assert (summary["new"], after["processed"], after["unprocessed"]) == (2, 2, 0)
    _list(store, staging, ["a", "b"], frames="f2")
    summary, after = _compute(store, staging, only=["a"])
    assert summary["stale"] == 2 and summary["stale_fields"] == {"image": 2}
    # orphans: keep limits the re-check to the increment's ids; b is still owed.
    assert (after["processed"], after["unprocessed"], after["unprocessed_examples"]) == (1, 1, ["b"])


def _resolved(tmp_path, ids, *, staged=False):
    """A delta store with root samples `ids` listed and the downstream increment resolved: (store, staging, request)."""
    store = {"kind": "delta", "path": str(tmp_path / "store")}
    staging = tmp_path / "staging"
    staging.mkdir()
    _list(store, staging, ids)
    req = _request(store, staging, DOWN)
    increment.resolve(req)
    if staged:
        (staging / "request.json").write_text(json.dumps(req))
    return store, staging, req


def test_write_refuses_wrong_types_and_missing_columns(tmp_path):
    _, _, req = _resolved(tmp_path, ["a"])
    job = FeatureJob(req)
    with pytest.raises(increment.FeatureDataError, match="lack column"):
        job.write(pl.DataFrame({"sample_id": ["a"]}))
    with pytest.raises(increment.FeatureDataError, match="text is not parsed"):
        job.write(pl.DataFrame({"sample_id": ["a"], "width": ["wide"]}))
    assert increment.commit(req)["processed"] == 0


def test_a_value_the_declared_type_would_change_is_refused_with_id_and_column(tmp_path):
    store, _, req = _resolved(tmp_path, ["a", "b"])
    job = FeatureJob(req)
    with pytest.raises(increment.FeatureDataError) as caught:
        job.write(pl.DataFrame({"sample_id": ["a", "b"], "width": [3.0, 3.7]}))
    problem = caught.value.problem
    assert "'width' is declared int" in problem and "b (3.7 would become 3)" in problem and "a (" not in problem
    assert "declare it as float" in caught.value.fix
    # Neither row reached the store: the exact 3.0 is not written without the 3.7 either.
    assert (increment.commit(req)["processed"], job.written) == (0, 0)


def test_runtime_cli_reports_data_errors_as_json(tmp_path):
    store = {"kind": "delta", "path": str(tmp_path / "store")}
    staging = tmp_path / "staging"
    staging.mkdir()
    req = _request(store, staging, ROOT)
    (staging / "request.json").write_text(json.dumps(req))
    out = subprocess.run([sys.executable, "-m", "components.runtime", "ingest", str(staging / "request.json")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 3
    error = json.loads(out.stdout.strip().splitlines()[-1].removeprefix("hpc-error "))
    assert "emitted no samples" in error["problem"] and "emit" in error["fix"]


_WRITER = """
import sys, polars as pl
from components.runtime.job import FeatureJob
import json
job = FeatureJob(json.load(open(sys.argv[1])))
part = job.samples()  # this task's share: SLURM_PROCID of SLURM_NTASKS
for row in part.iter_slices(1):
    job.write(row.select("sample_id", width=pl.lit(1)))
"""


def test_several_writer_processes_at_once_on_delta(tmp_path):
    ids = [f"s{i}" for i in range(12)]
    store, staging, req = _resolved(tmp_path, ids, staged=True)
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(staging / "request.json")],
                              env={**os.environ, "SLURM_PROCID": str(rank), "SLURM_NTASKS": "4"})
             for rank in range(4)]
    assert [p.wait(timeout=300) for p in procs] == [0] * len(procs)
    assert increment.commit(req) | {"unprocessed_examples": []} == {
        "feature": "t/crop", "processed": 12, "unprocessed": 0, "unprocessed_examples": [], "deleted": 0}


_REFUSED = """
import polars as pl
from components.runtime.job import FeatureJob
job = FeatureJob.from_env()
job.write(job.samples().select((pl.col("sample_id") + "-x").alias("sample_id"), width=pl.lit(1)))
"""


def test_a_workload_dying_on_refused_results_leaves_the_message_not_a_traceback(tmp_path):
    store, staging, req = _resolved(tmp_path, ["a"], staged=True)
    out = subprocess.run([sys.executable, "-c", _REFUSED], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "HPC_METAXY_REQUEST": str(staging / "request.json")})
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "not in this run's increment" in out.stderr and "fix: write only samples" in out.stderr
    recorded = json.loads((staging / "data-error.json").read_text())
    assert "a-x" in recorded["problem"] and recorded["written"] == 0


def test_the_wrong_half_of_the_api_is_refused_with_the_right_call(tmp_path):
    store = {"kind": "delta", "path": str(tmp_path / "store")}
    root, down = FeatureJob(_request(store, tmp_path, ROOT)), FeatureJob(_request(store, tmp_path, DOWN))
    for call, fix in [(root.samples, "job.emit"), (lambda: root.write(pl.DataFrame()), "job.emit"),
                      (lambda: down.emit(pl.DataFrame(), {}), "job.samples()")]:
        with pytest.raises(increment.FeatureDataError) as caught:
            call()
        assert fix in caught.value.fix
        # Recorded for the step, which then fails with this message instead of the workload's traceback.
        assert json.loads((tmp_path / "data-error.json").read_text())["fix"] == caught.value.fix


# A conversion-like feature: each result carries a status; `retry` re-computes some statuses.
RESULT = {**DOWN, "key": "t/result", "columns": {"status": "str"}}
RETRY_STATUS = {"a": "failed", "b": "partial", "c": "converted"}


def _retry_request(store, staging, run, values=None):
    req = {"target": RESULT["key"], "specs": [ROOT, RESULT], "store": store, "staging": str(staging),
           "orphans": "keep", "materialization_id": run}
    return {**req, "retry": {"column": "status", "values": values}} if values is not None else req


def _convert(store, staging, run, values=None, *, skip=()):
    """Resolve (with `retry` values), write each sample's status again except `skip`, commit: (summary, after)."""
    req = _retry_request(store, staging, run, values)
    summary = increment.resolve(req)
    job = FeatureJob(req)
    samples = job.samples().filter(~pl.col("sample_id").is_in(list(skip)))
    job.write(samples.select("sample_id", status=pl.col("sample_id").replace_strict(RETRY_STATUS)))
    return summary, increment.commit(req)


def test_retry_recomputes_stored_statuses_without_a_provenance_change(store, tmp_path):
    staging = tmp_path / "staging"
    staging.mkdir()
    _list(store, staging, ["a", "b", "c"])
    summary, after = _convert(store, staging, "run-1")
    assert (summary["new"], after["processed"], "retried" in summary) == (3, 3, False)
    # Without retry (or with none listed) nothing is owed: the provenance did not change.
    for values in (None, []):
        summary, _ = _convert(store, staging, "run-2", values)
        assert (summary["new"], summary["stale"], "retried" in summary) == (0, 0, False)
    # retry: [failed] makes exactly the failed sample stale; no field changed for it.
    summary, after = _convert(store, staging, "run-3", ["failed"])
    assert (summary["stale"], summary["retried"], summary["retried_examples"], summary["stale_fields"]) == (1, 1, ["a"], {})
    assert summary["up_to_date"] == 2 and summary["retry"] == {"column": "status", "values": ["failed"]}
    assert (after["processed"], after["unprocessed"]) == (1, 0)
    # Still failed after its retry: listed again next time retry asks for it, with the partial one now too.
    summary, _ = _convert(store, staging, "run-4", ["failed", "partial"])
    assert (summary["stale"], summary["retried"], sorted(summary["retried_examples"])) == (2, 2, ["a", "b"])
    # A file change and a retry at once: both stale, only the matched one counted as retried.
    _list(store, staging, ["a", "b", "c"], frames="f2")
    summary, _ = _convert(store, staging, "run-5", ["partial"])
    assert (summary["stale"], summary["retried"], summary["stale_fields"]) == (3, 1, {"image": 3})


def test_a_retried_sample_the_workload_did_not_write_again_is_unprocessed(store, tmp_path):
    # Its provenance alone would call it done; the run's materialization id says it was not rewritten.
    staging = tmp_path / "staging"
    staging.mkdir()
    _list(store, staging, ["a", "b", "c"])
    _convert(store, staging, "run-1")
    summary, after = _convert(store, staging, "run-2", ["failed", "partial"], skip=["b"])
    assert summary["retried"] == 2
    assert (after["processed"], after["unprocessed"], after["unprocessed_examples"]) == (1, 1, ["b"])


def test_retry_on_an_undeclared_column_is_refused(tmp_path):
    store = {"kind": "delta", "path": str(tmp_path / "store")}
    staging = tmp_path / "staging"
    staging.mkdir()
    _list(store, staging, ["a"])
    req = {**_retry_request(store, staging, "run-1", ["failed"]), "retry": {"column": "state", "values": ["failed"]}}
    with pytest.raises(increment.FeatureDataError, match="retry names column 'state'") as caught:
        increment.resolve(req)
    assert "status" in caught.value.fix
