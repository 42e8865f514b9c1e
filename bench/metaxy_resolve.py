"""Benchmark: resolving increments with MetaxyFeatureComponent's steps versus Metaxy directly.

Same process, same store, interleaved runs. For each size: a no-op resolve (nothing changed) and
a resolve after 1% of the upstream samples changed one field; the component's `resolve` step also
reports which fields changed and writes the increment file the workload reads. Then `commit`, the
re-check after a workload. Also Delta versus DuckDB at the smallest size, and concurrent writers.

    .venv/bin/python bench/metaxy_resolve.py [--sizes 100000 1000000] [--runs 3]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from components.runtime import increment  # noqa: E402
from components.runtime.increment import to_polars  # noqa: E402

ROOT = {"key": "bench/source", "id_columns": ["sample_id"], "columns": {"path": "str"},
        "fields": [{"key": "frames", "code_version": "1"}, {"key": "audio", "code_version": "1"}]}
DOWN = {"key": "bench/crop", "id_columns": ["sample_id"], "columns": {"width": "int"},
        "deps": [{"feature": "bench/source"}],
        "fields": [{"key": "image", "code_version": "1", "deps": [{"feature": "bench/source", "fields": ["frames"]}]}]}


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def samples(n: int, changed: int = 0) -> pl.DataFrame:
    ids = pl.int_range(0, n, eager=True).cast(pl.String)
    frames = pl.when(pl.int_range(0, n) < changed).then(pl.lit("f2")).otherwise(pl.lit("f1"))
    return pl.DataFrame({"sample_id": ids, "path": ids}).with_columns(
        pl.struct(frames=frames, audio=pl.lit("a1")).alias(increment.PROVENANCE))


def request(store: dict, staging: str, target: dict) -> dict:
    specs = [ROOT] if target is ROOT else [ROOT, DOWN]
    return {"target": target["key"], "specs": specs, "store": store, "staging": staging, "orphans": "keep"}


def seed(store: dict, staging: str, n: int) -> None:
    """Root with n samples, downstream fully computed."""
    root = increment.Feature(request(store, staging, ROOT))
    with root.graph.use():
        s = root.store()
        with s.open("w"):
            inc = s.resolve_update(root.cls, samples=samples(n))
            s.write(root.cls, to_polars(inc.new))
    down_req = request(store, staging, DOWN)
    increment.resolve(down_req)
    inc = pl.read_parquet(os.path.join(staging, increment.INCREMENT_FILE))
    down = increment.Feature(down_req)
    with down.graph.use():
        s = down.store()
        with s.open("w"):
            s.write(down.cls, inc.drop(increment.STATUS_COLUMN).with_columns(width=pl.lit(1)))


def change(store: dict, staging: str, n: int, changed: int) -> None:
    root = increment.Feature(request(store, staging, ROOT))
    with root.graph.use():
        s = root.store()
        with s.open("w"):
            inc = s.resolve_update(root.cls, samples=samples(n, changed))
            s.write(root.cls, to_polars(inc.stale))


def direct(store: dict, staging: str) -> int:
    """What a user would write with Metaxy alone: resolve_update and collect new + stale."""
    down = increment.Feature(request(store, staging, DOWN))
    with down.graph.use():
        s = down.store()
        with s.open("r"):
            inc = s.resolve_update(down.cls)
            return to_polars(inc.new).height + to_polars(inc.stale).height


def component(store: dict, staging: str) -> int:
    summary = increment.resolve(request(store, staging, DOWN))
    return summary["new"] + summary["stale"]


def timed(fn, *args) -> tuple[float, int]:
    started = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - started, out


def compare(label: str, store: dict, staging: str, runs: int, expect: int) -> None:
    d, c = [], []
    for _ in range(runs):
        t, out = timed(direct, store, staging)
        assert out == expect, (out, expect)
        d.append(t)
        t, out = timed(component, store, staging)
        assert out == expect, (out, expect)
        c.append(t)
    md, mc = statistics.median(d), statistics.median(c)
    print(f"  {label:<28} metaxy {md:7.3f} s   component {mc:7.3f} s   overhead {100 * (mc / md - 1):+6.1f}%   "
          f"(min {min(d):.3f}/{min(c):.3f})")


def bench_size(n: int, runs: int, kind: str = "delta") -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = {"kind": kind, "path": f"{tmp}/store" + (".duckdb" if kind == "duckdb" else "")}
        staging = f"{tmp}/staging"
        os.makedirs(staging)
        t0 = time.perf_counter()
        seed(store, staging, n)
        print(f"{kind} store, {n:,} samples (seeded in {time.perf_counter() - t0:.1f} s)")
        compare("no-op resolve", store, staging, runs, 0)
        changed = n // 100
        change(store, staging, n, changed)
        compare("resolve after 1% change", store, staging, runs, changed)
        req = request(store, staging, DOWN)
        t, summary = timed(increment.commit, req)
        print(f"  {'commit (re-check) after it':<28} {t:7.3f} s ({summary['unprocessed']} left unprocessed)")
        print(f"  peak RSS so far: {peak_mib():,.0f} MiB")


def _writer(kind: str, path: str, staging: str, worker: int, q) -> None:
    store = {"kind": kind, "path": path}
    feature = increment.Feature(request(store, staging, ROOT))
    ok = 0
    try:
        with feature.graph.use():
            for i in range(5):
                s = feature.store()
                with s.open("w"):
                    rows = samples(100).with_columns(pl.col("sample_id") + f"-{worker}-{i}")
                    s.write(feature.cls, rows)
                ok += 1
    except Exception as exc:  # noqa: BLE001 - reported, that is the point
        q.put((worker, ok, type(exc).__name__ + ": " + str(exc).splitlines()[0][:90]))
        return
    q.put((worker, ok, None))


def concurrency(kind: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/store" + (".duckdb" if kind == "duckdb" else "")
        ctx = multiprocessing.get_context("spawn")
        q = ctx.Queue()
        procs = [ctx.Process(target=_writer, args=(kind, path, tmp, w, q)) for w in range(3)]
        for p in procs:
            p.start()
        results = [q.get(timeout=300) for _ in procs]
        for p in procs:
            p.join()
        ok = sum(r[1] for r in results)
        errors = [r[2] for r in results if r[2]]
        print(f"  {kind}: 3 processes x 5 appends -> {ok}/15 succeeded" + (f"; {errors[0]}" if errors else ""))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    for n in args.sizes:
        bench_size(n, args.runs)
    print(f"store choice at {min(args.sizes):,} samples:")
    bench_size(min(args.sizes), args.runs, "duckdb")
    print("concurrent writers:")
    concurrency("delta")
    concurrency("duckdb")


if __name__ == "__main__":
    main()
