"""One step, many partitions: which partitions a run still has to compute, and how each partition's
task outcome becomes its own materialization (or its named failure).

Shared by the Slurm array runner (components.core.array_run) and local mode
(components.core.partition_local). A task's results are the Pipes results of its own channel,
with the task's run metadata (slurm_job_id 123_4, sacct figures) already merged in.

Recording: when every task succeeded, the step attaches each partition's metadata with
`context.add_asset_metadata(..., partition_key=...)` and yields one MaterializeResult per asset, so
Dagster writes one materialization per partition, each with its own metadata, and downstream steps
of the run go ahead. When some task failed, the successful partitions are logged as
AssetMaterialization events (partition=key) first, then the step raises dg.Failure naming the
failed keys with their stderr tails: Dagster marks the rest of the run's range failed, and a
re-execution from failure computes only the partitions without a materialization in the lineage.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import dagster as dg

from components.core.pipes_remote import RemoteFileContextInjector
from components.core.partitions import task_context

STDERR_LINES_PER_PARTITION = 15


@dataclass
class TaskResult:
    """One partition's task: results from its own Pipes channel, or why it failed."""

    key: str
    results: list = field(default_factory=list)  # MaterializeResult / AssetCheckResult
    failure: str | None = None  # the task's failure description (state, exit code, job dir)
    stderr_tail: str = ""
    metadata: dict = field(default_factory=dict)  # plain values: slurm_job_id, slurm_state, ...


class TaskContextInjector(RemoteFileContextInjector):
    """The run's Pipes context narrowed to one partition (partition_key, its window), kept in
    `data` instead of being written: the array runner uploads every task's context in one go."""

    def __init__(self, path: str, key: str, definition: dg.PartitionsDefinition | None):
        super().__init__(self._keep, path)
        self.key, self.definition, self.data = key, definition, b""

    def _keep(self, data: bytes, path: str) -> None:
        self.data = data

    def inject_context(self, context_data):
        return super().inject_context(task_context(context_data, self.key, self.definition))


class LocalTaskContextInjector(dg.PipesTempFileContextInjector):
    """Local mode: a temp file holding the run's Pipes context narrowed to one partition."""

    def __init__(self, key: str, definition: dg.PartitionsDefinition | None):
        super().__init__()
        self.key, self.definition = key, definition

    def inject_context(self, context_data):
        return super().inject_context(task_context(context_data, self.key, self.definition))


def run_partition_keys(context: dg.AssetExecutionContext) -> list[str]:
    """The partition keys this step covers: one, or the run's range (a single-run backfill)."""
    if context.has_partition_key_range:
        return list(context.partition_keys)
    return [context.partition_key] if context.has_partition_key else []


def is_partition_range(context: dg.AssetExecutionContext) -> bool:
    """True when the run covers a range of partitions (a backfill), even one of length 1."""
    tags = context.run.tags
    return context.has_partition_key_range and "dagster/asset_partition_range_start" in tags


def lineage_run_ids(context: dg.AssetExecutionContext) -> list[str]:
    """Earlier runs of this run's re-execution lineage (root and every re-execution before this one)."""
    run = context.run
    if not run.root_run_id:
        return []
    runs = context.instance.get_runs(filters=dg.RunsFilter(tags={"dagster/root_run_id": run.root_run_id}))
    return [run.root_run_id, *(r.run_id for r in runs if r.run_id not in (run.run_id, run.root_run_id))]


def done_in_lineage(context: dg.AssetExecutionContext, keys: Sequence[str]) -> dict[str, dict[dg.AssetKey, dg.EventLogRecord]]:
    """{partition key: {asset key: its materialization record}} for the keys that an earlier run of the
    lineage materialized for every asset of this step: a re-execution does not compute them again."""
    runs = set(lineage_run_ids(context))
    if not runs or not keys:
        return {}
    found: dict[str, dict[dg.AssetKey, dg.EventLogRecord]] = {}
    asset_keys = list(context.assets_def.keys)
    for asset_key in asset_keys:
        records = context.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=asset_key, asset_partitions=list(keys)), limit=10 * len(keys) + 100
        ).records
        for record in records:  # newest first
            if record.run_id in runs and record.partition_key is not None:
                found.setdefault(record.partition_key, {}).setdefault(asset_key, record)
    return {key: by_asset for key, by_asset in found.items() if len(by_asset) == len(asset_keys)}


def report(context: dg.AssetExecutionContext, tasks: Sequence[TaskResult],
           done_before: dict[str, dict[dg.AssetKey, dg.EventLogRecord]]) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    """Record each partition's materialization; raise dg.Failure naming failed partitions after the
    successful ones were recorded. done_before: partitions an earlier run of the lineage computed."""
    asset_keys = list(context.assets_def.keys)
    only = asset_keys[0] if len(asset_keys) == 1 else None
    failed = [t for t in tasks if t.failure is not None]
    succeeded = [t for t in tasks if t.failure is None]
    if failed:
        for task in succeeded:
            for result in task.results:
                if isinstance(result, dg.MaterializeResult):
                    context.log_event(dg.AssetMaterialization(asset_key=result.asset_key or only, partition=task.key,
                                                              metadata=dict(result.metadata or {})))
        raise _failure(tasks, failed)
    for task in succeeded:
        for result in task.results:
            if isinstance(result, dg.MaterializeResult):
                context.add_asset_metadata(dict(result.metadata or {}), asset_key=result.asset_key or only, partition_key=task.key)
    for key, by_asset in done_before.items():
        # The range's materializations are written again for every key; these keep the figures of
        # the run that computed them, and say which run that was.
        for asset_key, record in by_asset.items():
            earlier = record.asset_materialization.metadata if record.asset_materialization else {}
            context.add_asset_metadata({**earlier, "materialized_by_run": record.run_id}, asset_key=asset_key, partition_key=key)
    for asset_key in asset_keys:
        yield dg.MaterializeResult(asset_key=asset_key)
    yield from _checks(tasks)


def _checks(tasks: Sequence[TaskResult]) -> Iterator[dg.AssetCheckResult]:
    """One result per check for the whole step: passed when it passed for every partition."""
    by_check: dict[tuple, list[tuple[str, dg.AssetCheckResult]]] = {}
    for task in tasks:
        for result in task.results:
            if isinstance(result, dg.AssetCheckResult):
                by_check.setdefault((result.asset_key, result.check_name), []).append((task.key, result))
    for (asset_key, name), results in by_check.items():
        failing = [key for key, r in results if not r.passed]
        yield dg.AssetCheckResult(
            asset_key=asset_key, check_name=name, passed=not failing,
            metadata={"partitions_checked": len(results), "partitions_failing": ", ".join(failing) or "none"},
        )


def _failure(tasks: Sequence[TaskResult], failed: Sequence[TaskResult]) -> dg.Failure:
    names = ", ".join(t.key for t in failed)
    parts = [f"{len(failed)} of {len(tasks)} partitions failed: {names}. "
             f"The other {len(tasks) - len(failed)} were recorded as materialized; re-execute from failure to run only "
             f"the failed ones."]
    for task in failed:
        tail = "\n".join(task.stderr_tail.splitlines()[-STDERR_LINES_PER_PARTITION:])
        parts.append(f"--- partition {task.key}: {task.failure}\n--- last lines of its stderr ---\n{tail}")
    return dg.Failure(
        description="\n".join(parts),
        metadata={
            "failed_partitions": names,
            "failed_count": len(failed),
            "partitions": len(tasks),
            **{f"stderr_tail[{t.key}]": dg.MetadataValue.text(t.stderr_tail[-4000:]) for t in failed[:20]},
            **{f"slurm_job_id[{t.key}]": str(t.metadata["slurm_job_id"]) for t in failed[:20] if t.metadata.get("slurm_job_id")},
        },
    )
