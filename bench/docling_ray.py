"""Benchmark: Docling end to end, serial versus `ray.workers: auto` versus Ray actors, by corpus size.

Every measurement is a fresh Python process, so each mode pays what a real job pays: importing
Docling (and Ray), building converters, starting Ray and its actors, ray.shutdown. The parent writes
the corpus once, then for each size (`--sizes`, default 1,10,100,1000) runs every mode (`--modes`,
default serial,auto,ray2) once per repetition, the order rotated each repetition, as

    python bench/docling_ray.py --one MODE --corpus DIR --docs N --out DIR

which converts the first N documents of the sorted listing through the project's own
`convert_documents(docs, settings, log, stats)` with settings `ray: {workers: W, batch_size:
--batch-size, cpus_per_worker: 1}`, `docling: {pipeline: native}`. MODE serial is W = 0 (one
converter in the process), auto is W = "auto", rayN is W = N (N actors; the process's converter
stands in while they start).

    .venv/bin/python bench/docling_ray.py [--sizes 1,10,100,1000] [--modes serial,auto,ray2]
        [--runs 3] [--runs-large 1] [--size 20] [--batch-size 8] [--corpus DIR] [--verbose]

`--runs` repetitions for sizes up to 100, `--runs-large` above (the default run takes about 25
minutes on a quiet 2-core machine; the smoke `--sizes 1,10 --runs 1 --modes serial,ray2` about 2).
The corpus is bench/corpus.py's html/md/docx/pdf cycle (`write_document(dir/doc-NNNN.fmt, fmt, i,
--size)`), every document at size 20 by default: 21 sections, a 21-page PDF. It is written once for
the largest size (into `--corpus DIR` to keep it between runs; a `.bench-size` file there records its
size) and each size uses a prefix of it.

Timings, per run:
  wall      in the child: from the call of convert_documents, before anything imported Docling or
            Ray (polars and the project's runtime are imported, and the corpus listed, before the
            clock starts), to the generator's exhaustion, so it includes importing Docling and Ray,
            building converters, ray.init, actor start-up, conversion and ray.shutdown.
  process   in the parent: from starting the child process to its exit (adds the interpreter,
            importing polars and the runtime, listing the corpus with content signatures, exit).
  first     in the child: from the same start to the first result frame (frames hold up to
            --batch-size rows or FLUSH_S seconds of results); share = first / wall, the start-up
            share of the run. The first frame waits for --batch-size documents, so at small sizes
            it is near the end of the run; hence also
  ready     first minus the conversion time of the first frame's documents (the sum of their
            `elapsed_s`): when the first converter began converting, i.e. Docling's import and
            the converter build (exact while one converter works alone, as serial and auto do at
            first; earlier than the truth when several converters contributed to the first frame).
  ray       from `stats` when convert_documents takes it (it does when its signature has `stats`):
            Ray up and the last actor ready, seconds after Ray was started; for auto also when
            Ray was started, seconds after the clock (from its "auto: ..." log line), and how many
            documents the process and the actors converted.
  other     CPU seconds used by every process outside the benchmark's own tree (parent, child, Ray's
            processes) during the run, sampled from /proc every 0.2 s by the parent. Ray's workers run
            at nice 15 and yield to anything else: a run where other > 5% of the CPU time available
            (process wall x CPUs) is marked "*" and counted in the table's "dist" column.

Ratios are medians of per-repetition ratios of docs/s (serial wall / mode wall, same repetition).
Every run is checked: each document back exactly once with status "converted", and every
document's markdown character count the same in every run and mode, or the benchmark stops.
The last line checks the issue's goal (auto >= 1.0x serial at every size, >= 1.6x at 1,000
documents) and says PASS or FAIL from the measured medians; it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

_PROCESS_T0 = time.perf_counter()
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.corpus import FORMATS as CORPUS_FORMATS  # noqa: E402

FORMATS = ["html", "md", "docx", "pdf"]
DOCLING = {"pipeline": "native"}
DISTURBED = 0.05  # share of the machine's CPU time used by other processes that marks a run
TICK = os.sysconf("SC_CLK_TCK")
RESULT = "BENCH-RESULT "  # prefix of the child's one JSON line (Ray and Docling may print too)
GOAL_EVERY, GOAL_LARGE, LARGE = 1.0, 1.6, 1000


class CpuMonitor:
    """CPU seconds used during a run by this process and its descendants (the child, Ray's GCS,
    raylet, workers) versus every other process on the machine, sampled from /proc every 0.2 s."""

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


def workers_of(mode: str) -> int | str:
    """serial -> 0, auto -> "auto", rayN -> N; raises ValueError for anything else."""
    if mode == "serial":
        return 0
    if mode == "auto":
        return "auto"
    if mode.startswith("ray") and mode[3:].isdigit() and int(mode[3:]) > 0:
        return int(mode[3:])
    raise ValueError(f"unknown mode {mode!r}: use serial, auto or rayN (N Ray actors, e.g. ray2)")


# ---------------------------------------------------------------------------------------------
# The child: one measurement in a fresh process.

def child(mode: str, corpus: str, count: int, out: str, batch_size: int) -> int:
    """Convert the first `count` documents of `corpus` in `mode`; print one RESULT JSON line.
    Exit 1 (with an "error" in the JSON) when a document is missing, repeated or not converted."""
    import inspect

    import polars as pl

    from components.runtime.documents import SOURCE_ID, convert_documents, list_documents

    docs = list_documents({"path": corpus, "formats": FORMATS, "signature": "content"}).head(count)
    if docs.height < count:
        return _emit({"error": f"{corpus} holds {docs.height} documents, {count} wanted"})
    settings = {"input": {"formats": FORMATS}, "output": out, "docling": dict(DOCLING),
                "ray": {"workers": workers_of(mode), "batch_size": batch_size, "cpus_per_worker": 1}}
    stats: dict = {}
    kwargs = {"stats": stats} if "stats" in inspect.signature(convert_documents).parameters else {}
    events: dict = {"ray_started_at": None}

    def log(message: str) -> None:
        at = time.perf_counter() - started
        print(f"[{at:7.2f}s] {message}", file=sys.stderr, flush=True)
        if events["ray_started_at"] is None and message.startswith("auto:") and "starting Ray" in message:
            events["ray_started_at"] = at

    frames, first, ready = [], None, None
    started = time.perf_counter()
    pre = started - _PROCESS_T0
    for frame in convert_documents(docs, settings, log, **kwargs):
        if first is None:
            first = time.perf_counter() - started
            ready = first - float(frame["elapsed_s"].sum())
        frames.append(frame)
    wall = time.perf_counter() - started

    result = pl.concat(frames) if frames else pl.DataFrame({SOURCE_ID: [], "status": [], "chars": []})
    ids = result[SOURCE_ID].to_list()
    record = {"mode": mode, "docs": count, "wall": wall, "first": first, "first_rows": frames[0].height if frames else 0, "ready": ready,
              "pre": pre, "frames": len(frames), "stats": _jsonable(stats) if kwargs else None, **events}
    if not (len(ids) == len(set(ids)) == docs.height and set(ids) == set(docs[SOURCE_ID])):
        missing = sorted(set(docs[SOURCE_ID]) - set(ids))[:5]
        repeated = sorted(i for i, n in Counter(ids).items() if n > 1)[:5]
        return _emit(record | {"error": f"{len(ids)} results ({len(set(ids))} distinct) for {docs.height} documents; "
                                        f"missing e.g. {missing}, repeated e.g. {repeated}"})
    bad = result.filter(pl.col("status") != "converted")
    if not bad.is_empty():
        return _emit(record | {"error": f"{bad.height} not converted, e.g. {bad.select(SOURCE_ID, 'status', 'error').row(0)}"})
    return _emit(record | {"chars": dict(result.select(SOURCE_ID, "chars").iter_rows()),
                           "pages": int(result["pages"].sum()), "busy": float(result["elapsed_s"].sum())})


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def _emit(record: dict) -> int:
    print(RESULT + json.dumps(record), flush=True)
    return 1 if "error" in record else 0


# ---------------------------------------------------------------------------------------------
# The parent: corpus, schedule, checks, tables.

def write_corpus(directory: Path, count: int, size: int) -> float:
    """doc-NNNN.<fmt> for i < count in write_corpus's cycle of formats and seeds, every document at
    `size`; files already there are kept (write_document is deterministic). Seconds spent writing.
    Raises SystemExit when `directory` holds a corpus of another size."""
    from bench.corpus import write_document

    marker = directory / ".bench-size"  # list_documents skips dot files
    directory.mkdir(parents=True, exist_ok=True)
    if marker.exists() and marker.read_text().strip() != str(size):
        raise SystemExit(f"{directory} holds a corpus of --size {marker.read_text().strip()}, not {size}: "
                         "pass another --corpus directory or the same --size")
    marker.write_text(str(size))
    started = time.perf_counter()
    for i in range(count):
        fmt = CORPUS_FORMATS[i % len(CORPUS_FORMATS)]
        path = directory / f"doc-{i:04d}.{fmt}"
        if not path.exists():
            write_document(path, fmt, i, size)
    return time.perf_counter() - started


def run_one(mode: str, corpus: Path, count: int, out: Path, batch_size: int, verbose: bool) -> dict:
    """One child process; its record plus process wall and CPU figures. SystemExit on a failed run."""
    env = dict(os.environ)
    # Ray's worker processes inherit the environment: let them import components.runtime.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env.pop("RAY_ADDRESS", None)  # a private local Ray, never a cluster this shell happens to point at
    command = [sys.executable, str(Path(__file__).resolve()), "--one", mode, "--corpus", str(corpus),
               "--docs", str(count), "--out", str(out), "--batch-size", str(batch_size)]
    with CpuMonitor() as cpu:
        started = time.perf_counter()
        proc = subprocess.run(command, env=env, capture_output=True, text=True, cwd=ROOT)
        process = time.perf_counter() - started
    shutil.rmtree(out, ignore_errors=True)
    lines = [line[len(RESULT):] for line in proc.stdout.splitlines() if line.startswith(RESULT)]
    record = json.loads(lines[-1]) if lines else {"error": f"no result line (exit {proc.returncode})"}
    if verbose or "error" in record or proc.returncode:
        sys.stderr.write(proc.stderr[-6000:])
    if "error" in record or proc.returncode:
        raise SystemExit(f"{mode} at {count} documents failed: {record.get('error', f'exit {proc.returncode}')} "
                         f"(child's stderr above)")
    return record | {"process": process, "cpu": cpu.ours, "other": cpu.other,
                     "disturbed": cpu.other > DISTURBED * process * (os.cpu_count() or 1)}


def check_chars(record: dict, reference: dict[str, int]) -> None:
    """Every document's markdown character count equals the first run's; SystemExit naming the first difference."""
    for doc_id, chars in record["chars"].items():
        if reference.setdefault(doc_id, chars) != chars:
            raise SystemExit(f"markdown differs: {doc_id} has {chars} characters in {record['mode']} at {record['docs']} "
                             f"documents, {reference[doc_id]} in an earlier run")


def summarise(runs: list[dict], modes: list[str]) -> dict[str, dict]:
    """Per mode: medians over repetitions. `runs`: records of one size with a "rep" key; the ratio
    to serial is the median over repetitions of serial wall / mode wall in the same repetition."""
    serial = {r["rep"]: r for r in runs if r["mode"] == "serial"}
    out = {}
    for mode in modes:
        mine = [r for r in runs if r["mode"] == mode]
        if not mine:
            continue
        ratios = [serial[r["rep"]]["wall"] / r["wall"] for r in mine if r["rep"] in serial]
        ray = [r["stats"] for r in mine if r.get("stats")]
        ready = [max(s["actors_ready_s"]) for s in ray if s.get("actors_ready_s")]
        out[mode] = {
            "runs": len(mine),
            "wall": statistics.median(r["wall"] for r in mine),
            "process": statistics.median(r["process"] for r in mine),
            "docs_per_s": statistics.median(r["docs"] / r["wall"] for r in mine),
            "ratio": statistics.median(ratios) if ratios else None,
            "process_ratio": statistics.median(serial[r["rep"]]["process"] / r["process"] for r in mine if r["rep"] in serial)
            if ratios else None,
            "first": statistics.median(r["first"] for r in mine),
            "share": statistics.median(r["first"] / r["wall"] for r in mine),
            "ready": statistics.median(r["ready"] for r in mine),
            "ready_share": statistics.median(r["ready"] / r["wall"] for r in mine),
            "disturbed": sum(r["disturbed"] for r in mine),
            "ray_up": _median([s.get("ray_up_s") for s in ray]),
            "actors_ready": _median(ready),
            "ray_started_at": _median([r.get("ray_started_at") for r in mine]),
            "local_docs": _median([s.get("local_docs") for s in ray]),
            "ray_docs": _median([s.get("ray_docs") for s in ray]),
            "decision": Counter(str(s.get("decision")) for s in ray).most_common(1)[0][0] if ray else None,
        }
    return out


def _median(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _s(value: float | None, unit: str = "s") -> str:
    if value is None:
        return "-"
    return f"{value:.2f}{unit}" if unit else f"{value:g}"


def table(size: int, summary: dict[str, dict]) -> None:
    print(f"\n{size} document(s): medians over runs (ratio: median of per-repetition serial wall / mode wall)")
    print(f"  {'mode':<7} {'runs':>4} {'dist':>4} {'wall':>8} {'process':>8} {'docs/s':>7} {'xserial':>7} {'first':>7} "
          f"{'share':>6} {'ready':>7} {'share':>6}  {'ray at':>7} {'ray up':>7} {'actors':>7} {'local':>5} {'ray':>5}  decision")
    for mode, m in summary.items():
        ratio = "-" if m["ratio"] is None else f"{m['ratio']:.2f}x"
        print(f"  {mode:<7} {m['runs']:>4} {m['disturbed']:>4} {m['wall']:7.2f}s {m['process']:7.2f}s {m['docs_per_s']:7.2f} "
              f"{ratio:>7} {m['first']:6.2f}s {100 * m['share']:5.1f}% {m['ready']:6.2f}s {100 * m['ready_share']:5.1f}%  {_s(m['ray_started_at']):>7} {_s(m['ray_up']):>7} "
              f"{_s(m['actors_ready']):>7} {_s(m['local_docs'], ''):>5} {_s(m['ray_docs'], ''):>5}  {m['decision'] or '-'}")


def curve(summaries: dict[int, dict[str, dict]], modes: list[str]) -> None:
    others = [m for m in modes if m != "serial"]
    print("\ncurve: docs/s ratio to serial by size (in brackets: the same from process walls); start-up share of the wall "
          "to the first result (in brackets: to ready)")
    for size, summary in summaries.items():
        parts = []
        for mode in others:
            m = summary.get(mode)
            if m and m["ratio"] is not None:
                parts.append(f"{mode}/serial {m['ratio']:5.2f}x ({m['process_ratio']:.2f}x)")
        share = "  ".join(f"{mode} {100 * m['share']:4.1f}% ({100 * m['ready_share']:4.1f}%)" for mode, m in summary.items())
        print(f"  {size:>5}: " + "   ".join(parts) + f"   | {share}")


def goal(summaries: dict[int, dict[str, dict]]) -> tuple[str, str]:
    """("PASS" | "FAIL" | "NOT CHECKED", why) for auto >= 1.0x serial at every size and >= 1.6x at 1,000."""
    ratios = {size: s["auto"]["ratio"] for size, s in summaries.items() if s.get("auto") and s["auto"]["ratio"] is not None}
    if not ratios:
        return "NOT CHECKED", "needs modes serial and auto"
    failures = [f"{r:.2f}x < {GOAL_EVERY}x at {size}" for size, r in ratios.items() if r < GOAL_EVERY]
    if LARGE in ratios and ratios[LARGE] < GOAL_LARGE:
        failures.append(f"{ratios[LARGE]:.2f}x < {GOAL_LARGE}x at {LARGE}")
    measured = ", ".join(f"{size}: {r:.2f}x" for size, r in ratios.items())
    if failures:
        return "FAIL", f"{'; '.join(failures)} (auto/serial {measured})"
    if LARGE not in ratios:
        return "NOT CHECKED", f"no run at {LARGE} documents; so far auto >= {GOAL_EVERY}x ({measured})"
    return "PASS", f"auto/serial {measured}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1,10,100,1000", help="documents per measurement, comma-separated")
    parser.add_argument("--modes", default="serial,auto,ray2", help="serial, auto, rayN (N actors), comma-separated")
    parser.add_argument("--runs", type=int, default=3, help="repetitions for sizes up to 100")
    parser.add_argument("--runs-large", type=int, default=1, help="repetitions for sizes above 100")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--size", type=int, default=20, help="every document this size (size + 1 sections; a PDF has a page each)")
    parser.add_argument("--corpus", help="corpus directory, kept between runs (default: a temporary one)")
    parser.add_argument("--verbose", action="store_true", help="print every child's log (stderr)")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # child: one measurement
    parser.add_argument("--docs", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        sys.exit(child(args.one, args.corpus, args.docs, args.out, args.batch_size))

    sizes = sorted({int(s) for s in args.sizes.split(",")})
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    for mode in modes:
        try:
            workers_of(mode)
        except ValueError as exc:
            parser.error(str(exc))
    if "serial" not in modes:
        parser.error("--modes must include serial (every ratio is to serial)")
    if min(sizes) < 1:
        parser.error("--sizes must be positive")

    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(args.corpus).resolve() if args.corpus else Path(tmp) / "corpus"
        spent = write_corpus(corpus, max(sizes), args.size)
        print(f"corpus: {corpus}, {max(sizes)} documents at size {args.size} ({args.size + 1} sections, PDFs "
              f"{args.size + 1} pages; {spent:.1f}s to write); modes {', '.join(modes)}; {os.cpu_count()} CPUs; "
              f"batch_size {args.batch_size}; runs {args.runs} (<= 100 documents), {args.runs_large} (more)", flush=True)
        reference: dict[str, int] = {}
        summaries: dict[int, dict[str, dict]] = {}
        for size in sizes:
            runs = []
            for rep in range(args.runs if size <= 100 else args.runs_large):
                order = modes[rep % len(modes):] + modes[:rep % len(modes)]
                for mode in order:
                    r = run_one(mode, corpus, size, Path(tmp) / f"out-{size}-{rep}-{mode}", args.batch_size, args.verbose)
                    check_chars(r, reference)
                    runs.append(r | {"rep": rep})
                    s = r.get("stats") or {}
                    print(f"  {size:>5} docs  rep {rep + 1}  {mode:<7}{'*' if r['disturbed'] else ' '} wall {r['wall']:7.2f}s  "
                          f"process {r['process']:7.2f}s  first {r['first']:6.2f}s  ready {r['ready']:6.2f}s  cpu {r['cpu']:6.1f}s  other {r['other']:5.1f}s"
                          + (f"  {s.get('decision')}: local {s.get('local_docs')} ray {s.get('ray_docs')}" if s else ""),
                          flush=True)
            summaries[size] = summarise(runs, modes)
            table(size, summaries[size])
    curve(summaries, modes)
    disturbed = sum(m["disturbed"] for s in summaries.values() for m in s.values())
    total = sum(m["runs"] for s in summaries.values() for m in s.values())
    if disturbed:
        print(f"\n{disturbed} of {total} runs were disturbed by other processes ('*', 'dist'): rerun on a quiet machine")
    verdict, why = goal(summaries)
    print(f"\ngoal (auto >= {GOAL_EVERY}x serial at every size, >= {GOAL_LARGE}x at {LARGE}): {verdict}: {why}")


if __name__ == "__main__":
    main()
