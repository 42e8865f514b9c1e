"""Local mode for the partitions of one run: one process per partition, at most K at a time.

Each process is the same rendered script a single local run uses (components.core.local.run_script),
with HPC_PARTITION_KEY set and its own Pipes channel (context narrowed to its partition, its own
messages file), so each partition gets its own results and figures, as an array task on Slurm does.
"""

from __future__ import annotations

import datetime
import os
import signal
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import dagster as dg

from components.core.local import make_job_dir, run_script
from components.core.partition_runs import LocalTaskContextInjector, TaskResult


def run_partitions_locally(
    context: dg.AssetExecutionContext,
    keys: list[str],
    max_concurrent: int,
    *,
    script: str,
    jobs_root: Path,
    name: str,
    workloads_dir: Path,
    env: Mapping[str, str],
    metadata: Mapping[str, object],
    cpus: int,
    definition: dg.PartitionsDefinition | None,
) -> list[TaskResult]:
    """Run `script` once per key (HPC_PARTITION_KEY=key), at most max_concurrent at once; each
    partition's outcome in key order. A failing process fails only its partition."""
    stamp = datetime.datetime.now().strftime("%Y%m%dT%H%M%S")

    def one(index_key: tuple[int, str]) -> TaskResult:
        index, key = index_key
        job_dir = make_job_dir(jobs_root, f"{stamp}-{context.run.run_id[:8]}-{name}-{index}")
        try:
            results = list(run_script(
                context, script=script, job_dir=job_dir, workloads_dir=workloads_dir,
                env={**env, "HPC_PARTITION_KEY": key}, metadata={**metadata, "partition_key": key}, cpus=cpus,
                context_injector=LocalTaskContextInjector(key, definition),
            ))
        except dg.Failure as exc:
            tail = exc.metadata.get("stderr_tail") if exc.metadata else None
            text = tail.value if isinstance(tail, dg.TextMetadataValue) else ""
            first = (exc.description or "").split("\n", 1)[0]
            return TaskResult(key, failure=first, stderr_tail=str(text), metadata={"job_dir": str(job_dir)})
        return TaskResult(key, results=results)

    context.log.info(f"running {len(keys)} partition(s) locally, at most {max_concurrent} at once")
    pool = ThreadPoolExecutor(max_workers=max(1, max_concurrent), thread_name_prefix="partition")
    try:
        return list(pool.map(one, enumerate(keys)))
    except BaseException:
        # Run terminated: the worker threads wait on their processes; stop those (each leads its own
        # process group) and start no more.
        pool.shutdown(wait=False, cancel_futures=True)
        _stop_children()
        raise
    finally:
        pool.shutdown(wait=True)


def _stop_children() -> None:
    """SIGTERM the process group of every child of this process (the partitions' job scripts)."""
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == me:  # ppid
            try:
                os.killpg(int(entry.name), signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                pass

