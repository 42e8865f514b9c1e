"""Benchmark: an experiment on a 1% subset as a branch, against the ways to get one without branches.

One process, one main store with N root samples and their downstream results. Each run, interleaved:
  baseline  copy   copy main's store and run the new code version on all of it there (today's way
                   to experiment beside main; the store's part only, not the workload's compute)
  baseline  no-op  the component's resolve on main with nothing to do (the floor of any step)
  branch    run    the branch's listing (1% subset), resolve under a new code version, the
                   workload's write of the 1%, commit: everything a branch run does in the store
  branch    seed   a branch without a definitions change: resolve copies the 1% rows from main
  branch    diff   `hpc branch diff`'s step
Then once: merge of the 1% into main, and main's resolve after it (the merged samples: 0 to do).

    .venv/bin/python bench/branches.py [--sizes 100000 1000000] [--runs 3] [--kind delta|duckdb]
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.metaxy_resolve import DOWN, ROOT, samples, seed  # noqa: E402
from components.runtime import branch_steps, increment  # noqa: E402
from components.runtime.job import FeatureJob  # noqa: E402

SUBSET = 0.01


def specs(version: str) -> list[dict]:
    return [ROOT, {**DOWN, "fields": [{**DOWN["fields"][0], "code_version": version}]}]


def request(store: dict, staging: str, target: str, version: str, branch: dict | None) -> dict:
    out = {"target": target, "specs": specs(version) if target == DOWN["key"] else [ROOT], "store": store,
           "staging": staging, "orphans": "keep", "materialization_id": "bench"}
    if branch:
        out["branch"] = {**branch, "files": {}}
    return out


def branch_run(store: dict, tmp: str, n: int, name: str, version: str) -> int:
    """A branch's whole run in the store: listing, resolve, the workload's write, commit. Rows computed."""
    staging = tempfile.mkdtemp(dir=tmp)
    branch = {"name": name, "subset": {"fraction": SUBSET, "seed": 1}}
    samples(n).write_parquet(os.path.join(staging, "samples-0.parquet"))
    increment.ingest(request(store, staging, ROOT["key"], "1", branch))
    down = request(store, staging, DOWN["key"], version, branch)
    increment.resolve(down)
    job = FeatureJob(down)
    todo = job.samples()
    if todo.height:
        job.write(todo.select("sample_id", width=pl.lit(2)))
    increment.commit(down)
    shutil.rmtree(staging)
    return todo.height


def in_place(store: dict, tmp: str, i: int) -> int:
    """Today's way without branches: copy main's store and run the new code version on all of it."""
    copy = {**store, "path": f"{tmp}/copy-{i}" + (".duckdb" if store["kind"] == "duckdb" else "")}
    if store["kind"] == "delta":
        shutil.copytree(store["path"], copy["path"])
    else:
        shutil.copyfile(store["path"], copy["path"])
    staging = tempfile.mkdtemp(dir=tmp)
    down = request(copy, staging, DOWN["key"], "2", None)
    increment.resolve(down)
    job = FeatureJob(down)
    todo = job.samples()
    job.write(todo.select("sample_id", width=pl.lit(2)))
    increment.commit(down)
    shutil.rmtree(staging)
    return todo.height


def drop(store: dict, name: str) -> None:
    branch_steps.drop({"store": store, "specs": specs("1"), "branch": name, "missing_ok": True})


def timed(fn, *args):
    started = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - started, out


def bench(n: int, runs: int, kind: str) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        store = {"kind": kind, "path": f"{tmp}/store" + (".duckdb" if kind == "duckdb" else "")}
        staging = f"{tmp}/staging"
        os.makedirs(staging)
        seed(store, staging, n)
        times: dict[str, list[float]] = {k: [] for k in ("copy", "no-op", "run", "seed", "diff")}
        subset = None
        for i in range(runs):
            t, everything = timed(in_place, store, tmp, i)
            assert everything == n, everything
            times["copy"].append(t)
            t, summary = timed(increment.resolve, request(store, staging, DOWN["key"], "1", None))
            assert summary["new"] + summary["stale"] == 0
            times["no-op"].append(t)
            t, subset = timed(branch_run, store, tmp, n, "try", "2")
            times["run"].append(t)
            t, seeded = timed(branch_run, store, tmp, n, "same", "1")
            assert seeded == 0, seeded  # every subset sample copied from main, none computed
            times["seed"].append(t)
            t, diff = timed(branch_steps.diff, {"store": store, "specs": specs("1"), "branch": "try"})
            times["diff"].append(t)
            if i < runs - 1:
                drop(store, "try")
            drop(store, "same")
            for copy in glob.glob(f"{tmp}/copy-*"):
                shutil.rmtree(copy) if os.path.isdir(copy) else os.unlink(copy)
        medians = {k: statistics.median(v) for k, v in times.items()}
        changed = {f["feature"]: f["changed"] for f in diff["features"]}
        t, merged = timed(branch_steps.merge, {"store": store, "specs": specs("2"), "branch": "try"})
        medians["merge"] = t
        after = increment.resolve(request(store, staging, DOWN["key"], "2", None))
        print(f"{kind}, {n:,} samples, subset {subset:,} ({SUBSET:.0%}), medians of {runs}:")
        print(f"  baseline: copy the store and run all {n:,} there {medians['copy']:.3f} s; "
              f"no-op resolve on main {medians['no-op']:.3f} s")
        print(f"  branch run (list, resolve, write {subset:,}, commit) {medians['run']:.3f} s "
              f"= {medians['run'] / medians['copy']:.2f}x the baseline's time")
        print(f"  branch run without changes (copies {subset:,} rows from main) {medians['seed']:.3f} s")
        print(f"  diff {medians['diff']:.3f} s ({changed}); merge {t:.3f} s ({merged['merged']}); "
              f"main after the merge: {after['new'] + after['stale']:,} to compute, "
              f"{n - after['new'] - after['stale']:,} up to date")
        return medians


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--kind", choices=["delta", "duckdb"], default="delta")
    args = parser.parse_args()
    for n in args.sizes:
        bench(n, args.runs, args.kind)


if __name__ == "__main__":
    main()
