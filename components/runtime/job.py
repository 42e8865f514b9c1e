"""The API a workload uses to compute a feature incrementally.

    from hpc_runtime.job import FeatureJob

    job = FeatureJob.from_env()
    samples = job.samples()          # only the new and stale samples (this task's share under srun)
    job.write(samples.select("sample_id", result=...))

A root feature lists its samples instead, with one provenance value per field:

    job.emit(frame, provenance={"frames": "frames_sig", "audio": "audio_sig"})

`write` may be called many times and from many processes at once (Ray workers, Slurm tasks).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import random
import sys
import time
import uuid

import polars as pl

from .names import REQUEST_ENV
from .checks import check_output
from .increment import INCREMENT_FILE, PROVENANCE, STATUS_COLUMN, Feature, FeatureDataError, record_data_error

COMMIT_ATTEMPTS = 8


def _commit_conflict() -> tuple[type[BaseException], ...]:
    try:
        from deltalake.exceptions import CommitFailedError
    except ImportError:  # a store without optimistic commits
        return ()
    return (CommitFailedError,)


def file_signature(path: str, *, content: bool = False) -> str:
    """A provenance value for a file: size and modification time, or a hash of its bytes."""
    if content:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        return "sha256:" + digest.hexdigest()
    stat = os.stat(path)
    return f"{stat.st_size}:{stat.st_mtime_ns}"


def _task() -> tuple[int, int]:
    return int(os.environ.get("SLURM_PROCID", "0")), max(1, int(os.environ.get("SLURM_NTASKS", "1")))


def _reported(method):
    """A refusal is recorded for the step (which shows it as the failure) before it propagates."""

    @functools.wraps(method)
    def wrapper(self: FeatureJob, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except FeatureDataError as exc:
            record_data_error(self.feature.staging, exc, self.written)
            raise

    return wrapper


def _quiet_data_errors() -> None:
    """An uncaught FeatureDataError ends the workload with its message: the traceback adds only our internals."""
    previous = sys.excepthook
    if getattr(previous, "hpc_data_errors", False):
        return

    def hook(kind, exc, tb):
        if isinstance(exc, FeatureDataError):
            print(f"{exc.problem}\n  fix: {exc.fix}", file=sys.stderr, flush=True)
        else:
            previous(kind, exc, tb)

    hook.hpc_data_errors = True  # type: ignore[attr-defined]
    sys.excepthook = hook


class FeatureJob:
    def __init__(self, request: dict):
        self.feature = Feature(request)
        self.key = self.feature.key
        self.id_columns = self.feature.id_columns
        self.fields = self.feature.fields
        self._increment: pl.DataFrame | None = None
        self.written = 0

    @classmethod
    def from_env(cls) -> FeatureJob:
        path = os.environ.get(REQUEST_ENV)
        if not path:
            raise RuntimeError(f"${REQUEST_ENV} is not set: this workload runs under a MetaxyFeatureComponent")
        with open(path, encoding="utf-8") as handle:
            job = cls(json.load(handle))
        _quiet_data_errors()
        return job

    def _load(self) -> pl.DataFrame:
        if self._increment is None:
            self._increment = pl.read_parquet(self.feature.path(INCREMENT_FILE))
        return self._increment

    @_reported
    def samples(self, *, shard: bool = True) -> pl.DataFrame:
        """New and stale samples with their upstream columns and `hpc_status`; under srun, this task's share."""
        if self.feature.is_root:
            raise FeatureDataError(f"{self.key} is a root feature (no deps): it has no increment for samples() to return",
                                   "list its samples with job.emit(frame, provenance={field: column}), or add deps: in its defs.yaml")
        frame = self._load()
        rank, size = _task() if shard else (0, 1)
        if size > 1:
            frame = frame.with_row_index("_row").filter(pl.col("_row") % size == rank).drop("_row")
        return frame.select([c for c in frame.columns if not c.startswith("metaxy_")])

    @_reported
    def write(self, frame: pl.DataFrame) -> int:
        """Record results through Metaxy; ids must come from the increment. Returns the rows written."""
        if self.feature.is_root:
            raise FeatureDataError(f"{self.key} is a root feature (no deps): write() records results of upstream samples",
                                   "list its samples with job.emit(frame, provenance={field: column}), or add deps: in its defs.yaml")
        frame = check_output(self.feature, frame)
        increment = self._load()
        system = increment.select([*self.id_columns, *(c for c in increment.columns if c.startswith("metaxy_"))])
        joined = frame.join(system, on=self.id_columns, how="left")
        unknown = joined.filter(pl.col(PROVENANCE).is_null())
        if unknown.height:
            shown = unknown.select(self.id_columns).head(10).rows()
            raise FeatureDataError(
                f"{self.key}: {unknown.height} result row(s) are not in this run's increment: {shown}",
                "write only samples returned by samples()",
            )
        if joined.height:
            self._store_rows(joined)
        self.written += joined.height
        return joined.height

    def _store_rows(self, rows: pl.DataFrame) -> None:
        # Writers racing to create the Delta table (or to merge its schema) lose the commit with
        # "metadata changed"; nothing of theirs was committed, so writing again is safe.
        conflict = _commit_conflict()
        for attempt in range(1, COMMIT_ATTEMPTS + 1):
            try:
                with self.feature.graph.use():
                    store = self.feature.store()
                    with store.open("w"):
                        store.write(self.feature.cls, rows, materialization_id=self.feature.request.get("materialization_id"))
                return
            except conflict:
                if attempt == COMMIT_ATTEMPTS:
                    raise
                time.sleep(random.uniform(0.05, 0.2) * attempt)

    @_reported
    def emit(self, frame: pl.DataFrame, provenance: dict[str, str]) -> int:
        """Root feature: the full current listing; `provenance` maps each field to the column holding its value."""
        if not self.feature.is_root:
            raise FeatureDataError(f"{self.key} has upstream features: emit() lists the samples of a root feature only",
                                   "read the new and stale samples with job.samples() and record results with job.write(frame)")
        missing = sorted(set(self.fields) - set(provenance))
        if missing:
            raise FeatureDataError(f"{self.key}: no provenance column given for field(s) {', '.join(missing)}",
                                   "pass provenance={field: column} for every field")
        absent = [c for c in provenance.values() if c not in frame.columns]
        if absent:
            raise FeatureDataError(f"{self.key}: provenance column(s) {', '.join(absent)} are not in the frame",
                                   "add them to the frame you emit")
        # Duplicates and NULLs are judged on the whole listing (all tasks) when it is ingested.
        keep = check_output(self.feature, frame, unique=False)
        struct = frame.select(pl.struct([pl.col(col).cast(pl.String).alias(field) for field, col in provenance.items()]).alias(PROVENANCE))
        out = pl.concat([keep, struct], how="horizontal")
        rank, _ = _task()
        out.write_parquet(self.feature.path(f"samples-{rank}-{uuid.uuid4().hex[:8]}.parquet"))
        self.written += out.height
        return out.height


__all__ = ["FeatureJob", "FeatureDataError", "file_signature", "STATUS_COLUMN", "REQUEST_ENV"]
