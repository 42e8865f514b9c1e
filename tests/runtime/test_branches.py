"""Branch stores on real Delta and DuckDB stores on disk: subset, fallback to main, diff, merge, drop."""

from __future__ import annotations

import json
import os

import polars as pl
import pytest

from components.runtime import branch_steps, branches, increment
from components.runtime.job import FeatureJob

ROOT = {"key": "t/source", "id_columns": ["sample_id"], "columns": {"path": "str", "size": "int"},
        "fields": [{"key": "content"}]}
DOWN = {"key": "t/text", "id_columns": ["sample_id"], "columns": {"text": "str", "text_path": "str"},
        "deps": [{"feature": "t/source"}], "fields": [{"key": "text", "code_version": "1"}]}
IDS = ["a", "b", "c", "d", "e", "f"]


@pytest.fixture(params=["delta", "duckdb"])
def store(request, tmp_path):
    suffix = ".duckdb" if request.param == "duckdb" else ""
    return {"kind": request.param, "path": str(tmp_path / f"store{suffix}")}


class Project:
    """Runs the two features on main or on a branch, the way the components' steps do."""

    def __init__(self, store: dict, tmp_path):
        self.store, self.tmp = store, tmp_path
        self.out = str(tmp_path / "text")
        self.runs = 0

    def _request(self, spec, branch, version):
        self.runs += 1
        staging = self.tmp / f"staging-{self.runs}"
        staging.mkdir()
        down = {**DOWN, "fields": [{"key": "text", "code_version": version}]}
        req = {"target": spec["key"], "specs": [ROOT] if spec is ROOT else [ROOT, down], "store": self.store,
               "staging": str(staging), "orphans": "delete", "materialization_id": f"run-{self.runs}"}
        if branch:
            req["branch"] = {**branch, "files": {"text_path": self.out} if spec is DOWN else {}}
        return req

    def listing(self, branch=None, contents=None):
        req = self._request(ROOT, branch, "1")
        contents = contents or {i: "v1" for i in IDS}
        ids = list(contents)
        FeatureJob(req).emit(pl.DataFrame({"sample_id": ids, "path": ids, "size": [len(i) for i in ids],
                                           "sig": [contents[i] for i in ids]}), provenance={"content": "sig"})
        return increment.ingest(req)

    def compute(self, branch=None, version="1"):
        req = self._request(DOWN, branch, version)
        summary = increment.resolve(req)
        job = FeatureJob(req)
        samples = job.samples()
        folder = branches.beside(self.out, branch["name"]) if branch else self.out
        os.makedirs(folder, exist_ok=True)
        paths = []
        for sample_id in samples["sample_id"]:
            path = os.path.join(folder, f"{sample_id}.txt")
            with open(path, "w") as handle:
                handle.write(f"{sample_id} under version {version}")
            paths.append(path)
        job.write(samples.select("sample_id", text=pl.lit(f"v{version}"), text_path=pl.Series(paths, dtype=pl.String)))
        return summary, increment.commit(req), sorted(samples["sample_id"])

    def step(self, name, branch_name, version="1", branch_version=None):
        def specs(v):
            return [ROOT, {**DOWN, "fields": [{"key": "text", "code_version": v}]}]

        request = {"store": self.store, "specs": specs(version), "branch": branch_name, "target": f"branch {branch_name}"}
        if branch_version:
            request["branch_specs"] = specs(branch_version)
        return branch_steps.STEPS[name](request)

    def main_then_branch(self):
        """Main computed on every sample, then the branch TRY on its subset under code version 2."""
        self.listing()
        self.compute()
        self.listing(TRY)
        self.compute(TRY, version="2")
        return self

    def main_rows(self, version="1"):
        from components.runtime.graph import build_graph

        down = {**DOWN, "fields": [{"key": "text", "code_version": version}]}
        graph, classes = build_graph([ROOT, down])
        with graph.use():
            from components.runtime.stores import open_store

            main = open_store(self.store)
            with main.open("r"):
                return branches.latest(main, classes["t/text"], ["sample_id"]).sort("sample_id")


TRY = {"name": "try-v2", "subset": {"ids": ["b", "d"]}, "set": {"t/text": {"code_version": "2"}}}


def test_a_branch_computes_only_its_subset_and_main_is_untouched_until_merge(store, tmp_path):
    project = Project(store, tmp_path)
    project.listing()
    assert project.compute()[2] == IDS
    before = project.main_rows()

    root = project.listing(TRY)
    assert (root["samples"], root["subset"], root["branch"]) == (6, 2, "try-v2")
    summary, after, computed = project.compute(TRY, version="2")
    assert computed == ["b", "d"]  # only the subset, under the branch's definitions
    assert (summary["new"], summary["stale"], summary["from_main"], after["processed"]) == (2, 0, 0, 2)
    assert project.main_rows().equals(before)  # main's store and its files: not touched
    assert open(os.path.join(project.out, "b.txt")).read() == "b under version 1"

    diff = project.step("branch-diff", "try-v2", version="1", branch_version="2")
    by_feature = {f["feature"]: f for f in diff["features"]}
    assert (by_feature["t/source"]["added"], by_feature["t/source"]["changed"], by_feature["t/source"]["same"]) == (0, 0, 2)
    text = by_feature["t/text"]
    assert (text["added"], text["changed"], text["changed_examples"], text["fields"]) == (0, 2, ["b", "d"], {"text": 2})
    assert len(text["feature_version"]["main"]) == 1 and text["feature_version"]["main"] != text["feature_version"]["branch"]
    versions = text["field_versions"]["text"]
    assert set(versions) == {"main", "branch"} and versions["main"] != versions["branch"]
    assert by_feature["t/source"]["field_versions"] == {}
    assert [f["main"] for f in text["files"]] == [os.path.join(project.out, "b.txt"), os.path.join(project.out, "d.txt")]

    # Main's definitions must be the branch's before its rows are worth merging.
    with pytest.raises(branches.BranchError, match="definitions main does not have"):
        project.step("branch-merge", "try-v2", version="1")
    merged = project.step("branch-merge", "try-v2", version="2")
    assert merged["merged"] == {"t/text": 2} and merged["files_moved"] == 2
    assert open(os.path.join(project.out, "b.txt")).read() == "b under version 2"
    rows = project.main_rows(version="2")
    assert rows.filter(pl.col("sample_id").is_in(["b", "d"]))["text_path"].to_list() == [
        os.path.join(project.out, "b.txt"), os.path.join(project.out, "d.txt")]

    # Main, now with the branch's definitions, computes the other four and none of the merged two.
    project.listing()
    summary, after, computed = project.compute(version="2")
    assert computed == ["a", "c", "e", "f"]

    dropped = project.step("branch-drop", "try-v2")
    assert not os.path.exists(os.path.expanduser(branches.branch_store(store, "try-v2")["path"]))
    assert not os.path.exists(branches.beside(project.out, "try-v2")) and dropped["removed"]
    assert project.step("branch-list", None)["branches"] == []


def test_a_branch_without_changes_copies_main_and_computes_nothing(store, tmp_path):
    project = Project(store, tmp_path)
    project.listing()
    project.compute()
    same = {"name": "same", "subset": {"fraction": 0.5, "seed": 3}}
    root = project.listing(same)
    kept = [i for i in IDS if branches.in_fraction(i, 0.5, 3)]
    assert root["subset"] == len(kept) > 0
    summary, after, computed = project.compute(same)
    assert computed == [] and (summary["new"], summary["from_main"]) == (0, len(kept))
    diff = project.step("branch-diff", "same")
    assert [(f["added"], f["changed"], f["same"]) for f in diff["features"]] == [(0, 0, len(kept))] * 2
    assert project.step("branch-merge", "same")["merged"] == {}


def test_merge_refuses_samples_main_changed_after_the_branch_started(store, tmp_path):
    project = Project(store, tmp_path).main_then_branch()
    # Main moves on: sample d's source changes and is recomputed there.
    project.listing(contents={**{i: "v1" for i in IDS}, "d": "v1-edited"})
    project.compute()
    before = project.main_rows()
    with pytest.raises(branches.BranchError) as refused:
        project.step("branch-merge", "try-v2", version="2")
    assert "t/source: 1 sample(s): d" in refused.value.problem and "t/text: 1 sample(s): d" in refused.value.problem
    assert "nothing was merged" in refused.value.problem
    assert project.main_rows().equals(before)
    assert not json.load(open(branches.record_path(store, "try-v2"))).get("merging")


def test_a_downstream_feature_on_a_branch_needs_its_upstream_there(store, tmp_path):
    project = Project(store, tmp_path)
    project.listing()
    project.compute()
    with pytest.raises(increment.FeatureDataError, match="has not run on branch try-v2"):
        project.compute(TRY, version="2")


def test_subset_parts(tmp_path):
    frame = pl.DataFrame({"doc_id": [f"d{i}" for i in range(200)], "format": ["pdf", "html"] * 100})
    assert branches.apply_subset(frame, {"ids": ["d1", "d7", "zz"]}, "k", ["doc_id"])["doc_id"].to_list() == ["d1", "d7"]
    assert branches.apply_subset(frame, {"where": "format = 'pdf'"}, "k", ["doc_id"]).height == 100
    half = branches.apply_subset(frame, {"fraction": 0.25, "seed": 1}, "k", ["doc_id"])
    assert 30 < half.height < 70 and half.equals(branches.apply_subset(frame, {"fraction": 0.25, "seed": 1}, "k", ["doc_id"]))
    assert not half.equals(branches.apply_subset(frame, {"fraction": 0.25, "seed": 2}, "k", ["doc_id"]))
    with pytest.raises(branches.BranchError, match="names column"):
        branches.apply_subset(frame, {"where": "pages > 3"}, "k", ["doc_id"])


def test_a_merge_cut_short_blocks_main_until_it_is_run_again_to_finish(store, tmp_path):
    project = Project(store, tmp_path).main_then_branch()
    # A real failure half way: a folder stands where main's file of b must go, so moving it fails
    # after the rows are written.
    os.unlink(os.path.join(project.out, "b.txt"))
    os.mkdir(os.path.join(project.out, "b.txt"))
    with pytest.raises(branches.BranchError, match="could not put a file in place") as cut:
        project.step("branch-merge", "try-v2", version="2")
    assert "hpc branch merge try-v2" in cut.value.fix
    assert json.load(open(branches.record_path(store, "try-v2")))["merging"]["moves"]
    with pytest.raises(increment.FeatureDataError, match="was cut short"):
        project.listing()  # main waits: its rows and files could disagree
    with pytest.raises(branches.BranchError, match="finish the merge first"):
        project.step("branch-drop", "try-v2")

    os.rmdir(os.path.join(project.out, "b.txt"))
    finished = project.step("branch-merge", "try-v2", version="2")
    assert finished["merged"] == {} and finished["files_moved"] == 2  # no row twice; the staged files moved
    assert open(os.path.join(project.out, "b.txt")).read() == "b under version 2"
    assert open(os.path.join(project.out, "d.txt")).read() == "d under version 2"
    project.listing()
    assert project.compute(version="2")[2] == ["a", "c", "e", "f"]


def test_steps_starting_a_branch_at_once_agree_on_its_start_and_keep_every_feature(tmp_path):
    import concurrent.futures
    import threading

    features = [f"t/f{i}" for i in range(8)]
    for attempt in range(5):  # parallel steps of one run (threads here: the same files, the same races)
        store = {"kind": "delta", "path": str(tmp_path / f"store-{attempt}")}
        barrier = threading.Barrier(len(features))

        def start(feature):
            barrier.wait()
            return branches.ensure_record(store, {"name": "race"}, feature, {"path": f"/out/{feature}"})["started_at"]

        with concurrent.futures.ThreadPoolExecutor(len(features)) as pool:
            starts = list(pool.map(start, features))
        record = branches.read_record(store, "race")
        assert set(starts) == {record["started_at"]}
        assert {k: v["files"]["path"] for k, v in record["features"].items()} == {f: f"/out/{f}" for f in features}


def test_a_duckdb_store_and_the_delta_store_of_the_same_stem_keep_separate_branches(tmp_path):
    delta = {"kind": "delta", "path": str(tmp_path / "metaxy")}
    duckdb = {"kind": "duckdb", "path": str(tmp_path / "metaxy.duckdb")}
    assert branches.record_path(delta, "try-v2") != branches.record_path(duckdb, "try-v2")
    assert branches.branch_store(duckdb, "try-v2")["path"] == str(tmp_path / "metaxy.duckdb.branches" / "try-v2.duckdb")


def test_merge_refuses_a_sample_main_deleted_after_the_branch_started(store, tmp_path):
    project = Project(store, tmp_path).main_then_branch()
    # Main moves on: sample d's source is gone, main deletes its rows (orphans: delete).
    project.listing(contents={i: "v1" for i in IDS if i != "d"})
    project.compute()
    with pytest.raises(branches.BranchError) as refused:
        project.step("branch-merge", "try-v2", version="2")
    assert "t/source: 1 sample(s): d" in refused.value.problem and "t/text: 1 sample(s): d" in refused.value.problem
    assert "d" not in project.main_rows(version="2")["sample_id"].to_list()


def test_a_branch_run_again_after_mains_change_merges_what_it_recomputed(store, tmp_path):
    project = Project(store, tmp_path).main_then_branch()
    edited = {**{i: "v1" for i in IDS}, "d": "v1-edited"}
    project.listing(contents=edited)  # main changes d after the branch started ...
    project.compute()
    project.listing(TRY, contents=edited)  # ... and the branch, run again, computes d from it
    assert project.compute(TRY, version="2")[2] == ["d"]
    merged = project.step("branch-merge", "try-v2", version="2")
    assert merged["merged"] == {"t/text": 2}  # b and d; the branch's source rows are main's
