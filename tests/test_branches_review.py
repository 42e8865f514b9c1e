"""Review of branches (issue 17): bugs found, each test FAILS ON PURPOSE until the code is fixed.

- A DuckDB store at `<dir>/metaxy.duckdb` and the default Delta store at `<dir>/metaxy` share one
  branches folder and so one record per branch name: `hpc branch list` shows the branch twice and
  `hpc branch merge` merges the DuckDB store, then fails on the Delta store with "already merged".
- A sample main deleted (orphans: delete) after the branch started is merged back into main as
  "added" instead of being refused as a change main made after the branch started.
- `hpc branch diff --files` calls files it cannot read on this machine (a Slurm profile's) "identical".
"""

from __future__ import annotations

import polars as pl
import pytest

from components.runtime import branches
from tests.runtime.test_branches import IDS, TRY, Project


def test_a_duckdb_store_and_the_delta_store_of_the_same_stem_keep_separate_branch_records(tmp_path):
    delta = {"kind": "delta", "path": str(tmp_path / "metaxy")}
    duckdb = {"kind": "duckdb", "path": str(tmp_path / "metaxy.duckdb")}
    assert branches.record_path(delta, "try-v2") != branches.record_path(duckdb, "try-v2")


@pytest.mark.parametrize("kind", ["delta", "duckdb"])
def test_merge_does_not_bring_back_a_sample_main_deleted_after_the_branch_started(kind, tmp_path):
    store = {"kind": kind, "path": str(tmp_path / ("store.duckdb" if kind == "duckdb" else "store"))}
    project = Project(store, tmp_path)
    project.listing()
    project.compute()
    project.listing(TRY)
    project.compute(TRY, version="2")
    # Main moves on: sample d's source is gone, main deletes its rows (orphans: delete).
    project.listing(contents={i: "v1" for i in IDS if i != "d"})
    project.compute()
    try:
        project.step("branch-merge", "try-v2", version="2")
    except branches.BranchError as refused:  # refusing, naming d, is a fix too
        assert "d" in refused.problem
        return
    assert "d" not in project.main_rows(version="2")["sample_id"].to_list(), \
        "merge wrote back sample d, which main deleted after the branch started"


def test_diff_files_does_not_call_files_it_cannot_read_here_identical(capsys):
    # On a Slurm profile the diff step runs on the login node and returns only paths; the files are not here.
    from components.cli_branches import _show_files

    _show_files([{"id": "report-4.pdf", "column": "markdown_path",
                  "branch": "/nonexistent/markdown.branches/pb/report-4.pdf.md", "main": "/nonexistent/markdown/report-4.pdf.md"}])
    assert "identical" not in capsys.readouterr().out
