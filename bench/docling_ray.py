"""Benchmark: Docling documents per second, one in-process converter versus Ray Data with actor workers.

Same process, same corpus, interleaved runs: serial through `convert_serial` (one converter), then
Ray through `convert_ray` (ray.init, an ActorPoolStrategy of `--workers` Converter actors,
ray.shutdown), `--runs` times. Both use the project's own batch plan (`plan_batches`). Every
document must come back exactly once with status "converted", and Ray's markdown must have serial's
character counts, or the benchmark stops.

    .venv/bin/python bench/docling_ray.py [--docs 120] [--runs 3] [--workers 2] [--batch-size 8] [--size 20]

The corpus is bench/corpus.py's html/md/docx/pdf cycle (`write_document`, the seeds and names of
`write_corpus(dir, docs)`), every document at `--size` 20: 21 sections, a 21-page PDF, ~0.2 s of
conversion per document on average, so conversion, not per-batch overhead, dominates. `--size 0`
uses `write_corpus` itself (sizes 1 and 5, `--large-every`), under 0.1 s per document: there the
whole serial run takes seconds and Ray's start-up decides everything.

Timings, per run (medians over runs in the table):
  wall        start of the call to the generator's exhaustion. Serial: building the converter and
              converting. Ray: ray.init, starting the actors (each imports Docling and builds its
              converter), converting, ray.shutdown.
  init        ray.init alone: from the call to when convert_ray logs "ray: started" (its log hook
              runs right after `_ray_init` returns); share = init / Ray wall.
  actors      from then until the first actor began converting (see ready).
  steady      documents per second once converters are ready. "Ready" is the arrival of the first
              batch result minus the conversion time that batch reports (the sum of its rows'
              `elapsed_s`), i.e. when the first converter began its first document. This is
              measured the same way for both sides: for serial it is the converter build, for Ray
              it is ray.init plus actor start-up (Docling import, converter build, Ray Data
              scheduling) of the first actor to start. Chosen over "from the first result" (shown
              as "(1st)") because that one drops the first batch from the count while the other
              actor's work in flight is still counted, which flatters Ray; this one counts every
              document, and if the second actor starts later than the first its lag is charged to
              Ray. Ends at the last batch's arrival (ray.shutdown is in wall, not in steady).
  cpu/other   CPU seconds of this process tree (with Ray's processes) and of everything else on
              the machine during the run. Ray's workers run at nice 15, so any other busy process
              starves them: a run pair where "other" exceeds 5% of the CPU time available
              (wall x CPUs) on either side is marked "*", and the table adds medians without them.
The in-process serial converter is built warm (Docling already imported; one document of each
format converted before the timed runs), as in a long-lived process; the cold build, which every
Ray actor pays in its fresh process, is printed once for comparison.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# Ray's worker processes inherit the environment: let them import components.runtime.documents.
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)

from bench.corpus import FORMATS as CORPUS_FORMATS  # noqa: E402
from bench.corpus import write_corpus, write_document  # noqa: E402
from components.runtime.documents import (  # noqa: E402
    SOURCE_ID,
    Converter,
    convert_ray,
    convert_serial,
    list_documents,
    plan_batches,
)

FORMATS = ["html", "md", "docx", "pdf"]
DOCLING = {"pipeline": "native"}
DISTURBED = 0.05  # share of the machine's CPU time used by other processes that marks a run
TICK = os.sysconf("SC_CLK_TCK")


class CpuMonitor:
    """CPU seconds used during a run by this process and its descendants (Ray's GCS, raylet, workers)
    versus every other process on the machine, sampled from /proc every 0.2 s. The machine is shared:
    "other" says how much a run was disturbed (Ray workers run at nice 15 and yield to anything else)."""

    def __init__(self) -> None:
        self.first: dict[int, float] = {}
        self.last: dict[int, tuple[float, bool]] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    @staticmethod
    def _sample() -> dict[int, tuple[int, float]]:
        out = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat") as handle:
                        fields = handle.read().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                out[int(entry)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / TICK)
        return out

    def _record(self, initial: bool = False) -> None:
        procs, me = self._sample(), os.getpid()
        for pid, (_, cpu) in procs.items():
            ours, p, hops = False, pid, 0
            while p > 1 and hops < 50:
                if p == me:
                    ours = True
                    break
                p, hops = procs.get(p, (0, 0.0))[0], hops + 1
            if initial:
                self.first[pid] = cpu
            # Sticky: at ray.shutdown a worker outliving its raylet is re-parented to init.
            self.last[pid] = (cpu, ours or self.last.get(pid, (0.0, False))[1])

    def _loop(self) -> None:
        while not self.stop.wait(0.2):
            self._record()

    def __enter__(self) -> CpuMonitor:
        self._record(initial=True)
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()
        self._record()
        used = {True: 0.0, False: 0.0}
        for pid, (cpu, ours) in self.last.items():
            used[ours] += cpu - self.first.get(pid, 0.0)
        self.ours, self.other = used[True], used[False]


def check(frames: list[pl.DataFrame], docs: pl.DataFrame, label: str) -> pl.DataFrame:
    """All documents back exactly once, every one converted; returns the combined result."""
    result = pl.concat(frames)
    ids = result[SOURCE_ID].to_list()
    assert len(ids) == len(set(ids)) == docs.height and set(ids) == set(docs[SOURCE_ID]), \
        f"{label}: {len(ids)} results ({len(set(ids))} distinct) for {docs.height} documents"
    bad = result.filter(pl.col("status") != "converted")
    assert bad.is_empty(), f"{label}: {bad.height} not converted, e.g. {bad.select(SOURCE_ID, 'status', 'error').row(0)}"
    return result


def timed_stream(stream, docs: pl.DataFrame, label: str, started: float) -> dict:
    """Drain a convert_* generator; arrival time of every batch result."""
    frames, arrivals = [], []
    for frame in stream:
        arrivals.append(time.perf_counter())
        frames.append(frame)
    done = time.perf_counter()
    result = check(frames, docs, label)
    first, last = arrivals[0], arrivals[-1]
    ready = first - float(frames[0]["elapsed_s"].sum())
    n = docs.height
    return {
        "wall": done - started,
        "ready": ready - started,
        "docs_per_s": n / (done - started),
        "steady": n / (last - ready),
        # The alternative definition, for reference: documents after the first result over the time after it.
        "steady_first": (n - frames[0].height) / (last - first) if last > first else float("nan"),
        "busy": float(result["elapsed_s"].sum()),
        "tail": done - last,
        "result": result,
    }


def run_serial(docs: pl.DataFrame, batches: list[list[int]], out: str) -> dict:
    with CpuMonitor() as cpu:
        started = time.perf_counter()
        stats = timed_stream(convert_serial(docs, DOCLING, FORMATS, out, batches), docs, "serial", started)
    return stats | {"cpu": cpu.ours, "other": cpu.other}


def run_ray(docs: pl.DataFrame, batches: list[list[int]], out: str, ray_options: dict) -> dict:
    import ray

    marks: dict[str, float] = {}

    def log(message: str) -> None:
        if message.startswith("ray: started"):
            marks["ray_up"] = time.perf_counter()

    with CpuMonitor() as cpu:
        started = time.perf_counter()
        stats = timed_stream(convert_ray(docs, DOCLING, FORMATS, out, batches, ray_options, log), docs, "ray", started)
    stats |= {"cpu": cpu.ours, "other": cpu.other}
    assert not ray.is_initialized(), "convert_ray left Ray running"
    stats["ray_start"] = marks["ray_up"] - started
    stats["ray_share"] = stats["ray_start"] / stats["wall"]
    stats["actors"] = stats["ready"] - stats["ray_start"]
    return stats


def write(directory: Path, count: int, size: int, large_every: int) -> None:
    """write_corpus's cycle of formats and seeds, every document at `size`; size 0: write_corpus itself."""
    if not size:
        write_corpus(directory, count, seed=0, large_every=large_every)
    else:
        for i in range(count):
            fmt = CORPUS_FORMATS[i % len(CORPUS_FORMATS)]
            write_document(directory / f"doc-{i:04d}.{fmt}", fmt, i, size)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--docs", type=int, default=120)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--size", type=int, default=20,
                        help="every document this size (size + 1 sections; a PDF has a page per section); "
                             "0: write_corpus's own mix of sizes 1 and 5")
    parser.add_argument("--large-every", type=int, default=10,
                        help="with --size 0: write_corpus's large_every (every n-th document size 5, the rest size 1)")
    args = parser.parse_args()
    ray_options = {"workers": args.workers, "batch_size": args.batch_size, "cpus_per_worker": 1}

    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus"
        write(corpus, args.docs, args.size, args.large_every)
        docs = list_documents({"path": str(corpus), "formats": FORMATS, "signature": "content"})
        batches = plan_batches(docs["cost"].to_list(), args.workers, args.batch_size)
        sizes = [len(b) for b in batches]
        formats = dict(docs.group_by("format").len().sort("format").iter_rows())
        shape = f"size {args.size}" if args.size else f"write_corpus large_every={args.large_every}"
        print(f"corpus ({shape}): {docs.height} documents {formats}, ~{int(docs['cost'].sum())} pages, "
              f"{docs['bytes'].sum() / 1e6:.1f} MB; {len(batches)} batches of {min(sizes)}-{max(sizes)} documents "
              f"(workers={args.workers}, batch_size={args.batch_size}); {os.cpu_count()} CPUs")

        started = time.perf_counter()
        import ray.data  # noqa: F401 - imported once here so no run pays for it

        logging.getLogger("ray.data").setLevel(logging.WARNING)  # no per-run "Starting execution" lines

        warm = Converter(DOCLING, FORMATS, f"{tmp}/warm")
        cold = time.perf_counter() - started
        for fmt in FORMATS:  # the first document of each format loads its backend: once, untimed
            row = docs.filter(pl.col("format") == fmt).row(0, named=True)
            warm.convert(row[SOURCE_ID], row["path"])
        del warm
        print(f"cold converter build in this process (import Ray + Docling, build; each Ray actor pays the Docling part): {cold:.2f} s")

        runs: list[tuple[dict, dict]] = []
        print(f"{'':>3}  {'--------- serial ---------':^33}   {'------------------------------ ray ------------------------------':^75}")
        print(f"{'run':>3}  {'wall':>7} {'docs/s':>6} {'steady':>6} {'cpu':>5} {'other':>5}   "
              f"{'wall':>7} {'docs/s':>6} {'init':>6} {'share':>6} {'actors':>7} {'steady':>6} {'(1st)':>6} "
              f"{'shutdn':>6} {'cpu':>5} {'other':>5}   {'e2e':>5} {'steady':>6}")
        for i in range(args.runs):
            out_s, out_r = f"{tmp}/out-serial-{i}", f"{tmp}/out-ray-{i}"
            s = run_serial(docs, batches, out_s)
            r = run_ray(docs, batches, out_r, ray_options)
            chars = s["result"].select(SOURCE_ID, "chars").join(r["result"].select(SOURCE_ID, "chars"), on=SOURCE_ID)
            assert (chars["chars"] == chars["chars_right"]).all(), "Ray and serial markdown differ"
            shutil.rmtree(out_s), shutil.rmtree(out_r)
            runs.append((s, r))
            mark = "*" if disturbed(s) or disturbed(r) else " "
            print(f"{i + 1:>2}{mark}  {s['wall']:6.2f}s {s['docs_per_s']:6.2f} {s['steady']:6.2f} {s['cpu']:5.1f} {s['other']:5.1f}   "
                  f"{r['wall']:6.2f}s {r['docs_per_s']:6.2f} {r['ray_start']:5.2f}s {100 * r['ray_share']:5.1f}% "
                  f"{r['actors']:6.2f}s {r['steady']:6.2f} {r['steady_first']:6.2f} {r['tail']:5.2f}s "
                  f"{r['cpu']:5.1f} {r['other']:5.1f}   {r['docs_per_s'] / s['docs_per_s']:4.2f}x {r['steady'] / s['steady']:5.2f}x",
                  flush=True)

    print("\nmedians over all runs" + ("" if args.runs > 1 else " (one run)"))
    table(runs)
    quiet = [run for run in runs if not (disturbed(run[0]) or disturbed(run[1]))]
    if 0 < len(quiet) < len(runs):
        print(f"\nmedians over the {len(quiet)} undisturbed run(s) (no '*')")
        table(quiet)
    elif not quiet:
        print("\nevery run was disturbed by other processes: rerun on a quiet machine")
    print(f"\n{args.workers} Ray workers on {os.cpu_count()} CPUs, {docs.height} documents; "
          f"ratios are medians of the per-run ratios")


def disturbed(stats: dict) -> bool:
    return stats["other"] > DISTURBED * stats["wall"] * (os.cpu_count() or 1)


def table(runs: list[tuple[dict, dict]]) -> None:
    med = {side: {k: statistics.median(run[j][k] for run in runs) for k in runs[0][j] if k != "result"}
           for j, side in enumerate(("serial", "ray"))}
    s, r = med["serial"], med["ray"]
    e2e = statistics.median(rr["docs_per_s"] / ss["docs_per_s"] for ss, rr in runs)
    steady = statistics.median(rr["steady"] / ss["steady"] for ss, rr in runs)
    rows = [
        ("wall, end to end (s)", f"{s['wall']:.2f}", f"{r['wall']:.2f}"),
        ("  ray.init (s)", "-", f"{r['ray_start']:.2f} ({100 * r['ray_share']:.1f}% of wall)"),
        ("  then until actors ready (s)", "-", f"{r['actors']:.2f} ({100 * r['actors'] / r['wall']:.1f}% of wall)"),
        ("  converter ready (s)", f"{s['ready']:.2f} (build)", f"{r['ready']:.2f} ({100 * r['ready'] / r['wall']:.1f}% of wall)"),
        ("  after last batch (s)", f"{s['tail']:.2f}", f"{r['tail']:.2f} (ray.shutdown)"),
        ("docs/s, end to end", f"{s['docs_per_s']:.2f}", f"{r['docs_per_s']:.2f}"),
        ("docs/s, steady (from ready)", f"{s['steady']:.2f}", f"{r['steady']:.2f}"),
        ("docs/s, steady (from 1st result)", f"{s['steady_first']:.2f}", f"{r['steady_first']:.2f}"),
        ("sum of per-document times (s)", f"{s['busy']:.2f}", f"{r['busy']:.2f} ({r['busy'] / s['busy']:.2f}x serial)"),
        ("CPU s, this process tree", f"{s['cpu']:.1f}", f"{r['cpu']:.1f}"),
        ("CPU s, other processes", f"{s['other']:.1f}", f"{r['other']:.1f}"),
    ]
    width = max(len(row[0]) for row in rows)
    print(f"  {'':<{width}}  {'serial':>14}  ray")
    for name, a, b in rows:
        print(f"  {name:<{width}}  {a:>14}  {b}")
    print(f"  {'Ray / serial docs/s, end to end':<{width}}  {e2e:>13.2f}x")
    print(f"  {'Ray / serial docs/s, steady':<{width}}  {steady:>13.2f}x")

if __name__ == "__main__":
    main()
