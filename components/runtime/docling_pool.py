"""Documents over converters: the workload's own converter, Ray actors, and a hard time limit each.

`ray.workers` decides who converts:

    0      one converter in this process (serial).
    N      N Ray actors. Ray starts in a background thread, and this process's converter stands
           in until every actor is ready, so the first documents never wait for Ray.
    auto   serial while the increment is small; once the estimated rest (measured seconds per
           page times the pages left) makes starting Ray pay off (`ray_pays_off`), Ray starts in
           the background with an actor per CPU left beside this process, which keeps converting
           throughout (on GPUs: an actor per GPU share, and this process stands in as for N).

Ray actors get one document per call, two in flight each (so an actor never waits for this
process), costliest first; this process takes the cheapest, so neither holds up the other at the
end. With `docling.document_timeout_s` set, a document still converting at `hard_limit` is
stopped wherever it is: its actor is killed with `ray.kill` or its converter process (see
docling_worker) with SIGKILL, the document is recorded as failed, and a fresh converter takes
over the rest. Results are yielded as frames of at most `batch_size` rows, or every FLUSH_S.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable, Iterator

import polars as pl

from .docling_convert import RESULT_SCHEMA, SOURCE_ID, Converter, failed_row, require_packages
from .docling_ray import RayPool, available_cpus
from .docling_worker import ConverterProcess

Log = Callable[[str], None]
# Priors for the decision before the first document is measured, seconds per estimated page on
# one core of this project's test machine (bench/docling_ray.py): native text layer ~0.03;
# the standard pipeline's layout model on CPU ~1.
SECONDS_PER_PAGE = {"native": 0.03, "standard": 1.0}
RAY_INIT_S = 5.0  # a local ray.init: 2.5-6 s measured on 2 cores (stack-facts)
RAY_JOIN_S = 1.0  # joining the cluster the job script started while this process imported
BUILD_PRIOR_S = 6.0  # importing Docling and building a converter, before this process has measured it
RAY_SHUTDOWN_S = 3.0  # ray.shutdown at the end, paid only when Ray was started
EVIDENCE_S = 1.0  # seconds of conversion measured here before the rate decides
FLUSH_S = 5.0


def hard_limit(timeout_s: float | None) -> float | None:
    """Seconds after which a document's converter is killed: the timeout plus a grace of half of
    it (at least 0.5 s, at most 60 s), so Docling's own stop between pages comes first when it can."""
    if not timeout_s:
        return None
    return timeout_s + min(max(0.5, 0.5 * timeout_s), 60.0)


def ray_pays_off(remaining_s: float, startup_s: float, workers: int) -> bool:
    """Whether starting `workers` Ray actors now ends sooner than converting the rest here.

    remaining_s: estimated seconds to convert the rest in this process; startup_s: until actors
    convert. While they start, this process keeps converting at ~70% speed (the start-up competes
    for the CPUs); then the actors run at ~90% of linear speed-up. Ray must save at least 15%.
    """
    if workers < 2:
        return False
    with_ray = startup_s + max(0.0, remaining_s - 0.7 * startup_s) / (0.9 * workers)
    return with_ray < 0.85 * remaining_s


class DocList:
    """The increment as plain lists (doc_id, path, estimated pages) and the wording of a hard stop."""

    def __init__(self, docs: pl.DataFrame, timeout_s: float | None, limit: float | None):
        self.ids, self.paths, self.costs = docs[SOURCE_ID].to_list(), docs["path"].to_list(), docs["cost"].to_list()
        self.timeout_s, self.limit = timeout_s, limit

    def stopped(self, elapsed_s: float) -> str:
        return (f"timed out: stopped after {elapsed_s:.1f}s, past docling.document_timeout_s ({self.timeout_s:g}s) and its "
                f"grace ({self.limit - self.timeout_s:g}s); its converter was killed and replaced")


class _Local:
    """This process's converter: in-process, or a killable ConverterProcess when there is a time limit."""

    def __init__(self, options: dict, formats: list[str], output: str, killable: bool, log: Log):
        self.process = ConverterProcess(options, formats, output) if killable else None
        self.converter = None if killable else Converter(options, formats, output)
        self.index = -1  # the document the converter process has
        self.log, self.announced = log, None
        self.devices: set[str] = set()
        if self.converter is not None:
            self.devices.add(self.converter.device)
            log(f"converter ready in this process on {self.converter.device} (built in {self.converter.build_s:.1f}s)")

    @property
    def build_s(self) -> float | None:
        if self.converter is not None:
            return self.converter.build_s
        return self.process.info["build_s"] if self.process.info else None

    @property
    def idle(self) -> bool:
        return self.process.idle if self.process else True

    def close(self) -> None:
        if self.process:
            self.process.close()
        self.process = self.converter = None


def _settings(settings: dict) -> tuple[dict, list[str], str, dict, int | None]:
    options = settings.get("docling", {})
    ray_options = settings.get("ray", {})
    workers = ray_options.get("workers", "auto")
    return options, list(settings["input"]["formats"]), settings["output"], ray_options, None if workers == "auto" else int(workers)


def convert_documents(docs: pl.DataFrame, settings: dict, log: Log = print, stats: dict | None = None) -> Iterator[pl.DataFrame]:
    """Convert `docs` (doc_id, path, cost) and yield RESULT_SCHEMA frames as documents finish.

    settings: the component's request (`docling`, `ray`, `input.formats`, `output`). `stats`, if
    given, is filled with what happened: decision, workers, ray_up_s, actors_ready_s (seconds from
    the start), local_docs, ray_docs, stopped (hard stops). Raises MissingPackages/MissingWeights
    (setup problems, before any document) and RuntimeError when explicit Ray workers cannot start.
    """
    options, formats, output, ray_options, workers = _settings(settings)
    stats = stats if stats is not None else {}
    timeout_s = options.get("document_timeout_s")
    limit = hard_limit(timeout_s)
    batch_size = max(1, int(ray_options.get("batch_size", 8)))
    cpw = float(ray_options.get("cpus_per_worker", 1))
    auto = workers is None
    require_packages(ray=bool(workers))
    ray_importable = workers or _ray_importable()
    started = time.monotonic()
    plan = DocList(docs, timeout_s, limit)
    pending = deque(sorted(range(docs.height), key=lambda i: (-plan.costs[i], i)))
    total_cost = sum(plan.costs)
    # auto on CPUs: the workload's converter is one of the converters throughout, beside one actor
    # per CPU left (one start-up fewer on a small node); on GPUs it only stands in for the actors.
    beside = auto and not float(ray_options.get("gpus_per_worker", 0))
    auto_workers = max(1, int(available_cpus() // max(cpw, 0.01)) - beside)
    stats.update(decision="serial" if workers == 0 else "ray" if workers else "auto: serial", workers=workers or 0,
                 local_docs=0, ray_docs=0, stopped=0)
    log(f"converting {docs.height} document(s) (~{total_cost} pages) "
        + ("in this process" if workers == 0 else f"with Ray, {workers} worker(s)" if workers else
           f"in this process, with Ray ({auto_workers} worker(s){' beside it' if beside else ''}) once the rest would take "
           "longer than starting it"))

    pool: RayPool | None = None
    gave_up_ray = False

    def abandon(failed: RayPool, reason: str) -> None:
        """auto only: go on without Ray; its documents in flight go back to the queue."""
        nonlocal gave_up_ray
        log(f"auto: {reason}; converting in this process")
        for actor in failed.actors:
            pending.extend(index for _, index in actor.inflight)
        failed.shutdown()
        gave_up_ray = True
        stats["decision"] = "auto: serial (Ray failed)"
        return None

    def start_ray(reason: str) -> None:
        nonlocal pool
        pool = RayPool(options, formats, output, ray_options, workers, log, reserve=int(beside))
        stats["decision"] = f"auto: ray ({reason})" if auto else "ray"
        if auto:
            log(f"auto: {reason}: starting Ray with {auto_workers} worker(s) in the background; converting here meanwhile")

    def startup_s(build_s: float | None) -> float:
        return (RAY_JOIN_S if os.environ.get("RAY_ADDRESS") else RAY_INIT_S + RAY_SHUTDOWN_S) + 1.3 * (build_s or BUILD_PRIOR_S) + 1.0

    if workers:
        start_ray("")
    elif auto and ray_importable and docs.height > 1:
        prior = SECONDS_PER_PAGE.get(options.get("pipeline", "native"), 1.0) * total_cost
        if ray_pays_off(prior / 2, startup_s(None), auto_workers + beside):  # clearly large even if the prior is 2x too high
            start_ray(f"~{total_cost} pages, ~{prior:.0f}s estimated")

    local: _Local | None = _Local(options, formats, output, killable=limit is not None, log=log)
    results: list[dict] = []
    measured = {"s": 0.0, "pages": 0}
    done_count = 0
    last_flush = time.monotonic()

    def done(index: int, row: dict, where: str) -> None:
        nonlocal done_count
        results.append(row)
        done_count += 1
        stats[f"{where}_docs"] += 1
        if row["status"] == "failed" and row["error"] and "converter was killed" in row["error"]:
            stats["stopped"] += 1
            log(f"stopped {row[SOURCE_ID]}: {row['error']}")
        if where == "local" and row["status"] != "failed":  # a failure's time says nothing of the rate
            measured["s"] += row["elapsed_s"]
            measured["pages"] += plan.costs[index]

    try:
        while done_count < docs.height:
            happened = False
            if pool is not None:
                if pool.up.is_set() and pool.error is not None:
                    if not auto:
                        raise RuntimeError(f"Ray did not start: {pool.error}") from pool.error
                    pool = abandon(pool, f"Ray did not start ({str(pool.error)[:300]})")
                    continue
                try:
                    happened |= pool.step(plan, pending, limit, done)
                except RuntimeError as exc:
                    if not auto or local is None:
                        raise
                    pool = abandon(pool, str(exc))
                    continue
                if local is not None and pool.all_ready and not beside:
                    # Every actor converts now; this process's converter would only compete with them.
                    if local.idle:
                        stats["devices"] = sorted(local.devices)
                        local.close()
                        local = None
            stands_in = pool is None or not pool.all_ready or beside
            if local is not None and local.process is not None:
                happened |= _step_process(local, plan, pending, limit, stands_in, done, output, pool)
            elif local is not None and stands_in and pending:
                index = take(pending, pool)
                done(index, local.converter.convert(plan.ids[index], plan.paths[index]), "local")
                happened = True
            if auto and pool is None and not gave_up_ray and ray_importable and pending and measured["s"] >= EVIDENCE_S:
                per_page = measured["s"] / measured["pages"]
                rest = sum(min(per_page * plan.costs[i], limit or float("inf")) for i in pending)
                if ray_pays_off(rest, startup_s(local.build_s if local else None), auto_workers + beside):
                    start_ray(f"~{rest:.0f}s left at {per_page:.3f}s per page")
            if results and (len(results) >= batch_size or time.monotonic() - last_flush >= FLUSH_S or done_count == docs.height):
                yield pl.DataFrame(results, schema=RESULT_SCHEMA)
                results.clear()
                last_flush = time.monotonic()
            if not happened:
                if pool is not None:
                    pool.wait(0.05)
                elif local is not None and local.process is not None:
                    time.sleep(0.01)
    finally:
        devices = set(local.devices) if local is not None else set(stats.get("devices", []))
        if local is not None:
            local.close()
        if pool is not None:
            devices |= {actor.info["device"] for actor in pool.actors if actor.info}
            stats.update(ray_up_s=pool.up_s, actors_ready_s=pool.ready_s, workers=pool.workers)
            pool.shutdown()
        stats["elapsed_s"] = round(time.monotonic() - started, 3)
        stats["devices"] = sorted(devices)
    if results:
        yield pl.DataFrame(results, schema=RESULT_SCHEMA)


def take(pending: deque, pool: RayPool | None) -> int:
    """The next document for this process: the costliest while it converts alone (it measures the
    bulk, and order does not matter then); the cheapest once Ray takes the costliest, so this process
    never holds a large document while actors wait at the end."""
    return pending.popleft() if pool is None else pending.pop()


def _step_process(local: _Local, plan: DocList, pending: deque, limit: float | None, stands_in: bool,
                  done: Callable[[int, dict, str], None], output: str, pool: RayPool | None) -> bool:
    """Drive the killable local converter one step: collect its row, stop it when overdue, feed it."""
    proc = local.process
    message = proc.poll(0.02 if not proc.idle else 0.0)
    now = time.monotonic()
    if proc.info and local.announced != proc.info["pid"]:
        local.announced = proc.info["pid"]
        local.devices.add(proc.info["device"])
        local.log(f"converter process {proc.info['pid']} ready on {proc.info['device']} (built in {proc.info['build_s']:.1f}s)")
    if message is not None:
        index = local.index
        if "died" in message:
            if proc.current is None:
                raise RuntimeError(f"the Docling converter process exited before it was ready ({message['died']}); "
                                   "see the lines above in the job's stderr")
            done(index, failed_row(plan.ids[index], output, f"the converter process died while converting it ({message['died']})",
                                   now - proc.current[1]), "local")
            proc.start()
        else:
            done(index, message, "local")
        return True
    if proc.current is not None and limit and now - proc.current[1] > limit:
        index, elapsed = local.index, now - proc.current[1]
        proc.kill()
        done(index, failed_row(plan.ids[index], output, plan.stopped(elapsed), elapsed), "local")
        proc.start()
        return True
    if proc.idle and stands_in and pending:
        local.index = take(pending, pool)
        proc.submit(plan.ids[local.index], plan.paths[local.index])
        return True
    return False


def _ray_importable() -> bool:
    import importlib.util

    return importlib.util.find_spec("ray") is not None
