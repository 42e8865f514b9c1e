"""What a feature must (re)compute, and recording what was computed: the steps around a workload.

Each step takes a request (a JSON dict written by the orchestrator into a private staging
directory) and returns a JSON-able summary. They run in the Dagster process for local stores and
on the cluster's login node (through `python -m hpc_runtime`) when the store lives there.
"""

from __future__ import annotations

import glob
import json
import os
from collections import Counter
from typing import Any

import narwhals as nw
import polars as pl

from .graph import build_graph
from .names import DATA_ERROR_FILE
from .stores import describe, expand, open_store

STATUS_COLUMN = "hpc_status"  # "new" or "stale" in the increment a workload receives
INCREMENT_FILE = "increment.parquet"
RETRIED_FILE = "retried.parquet"  # ids resolve added by the request's `retry`, for commit to check they were rewritten
SAMPLES_GLOB = "samples*.parquet"
PROVENANCE = "metaxy_provenance_by_field"
MATERIALIZATION_ID = "metaxy_materialization_id"
SHOWN_IDS = 10


class FeatureDataError(Exception):
    """Data that must not reach the store; the message names the offending ids and what to do."""

    def __init__(self, problem: str, fix: str):
        super().__init__(f"{problem}\n  fix: {fix}")
        self.problem, self.fix = problem, fix


def record_data_error(staging: str, exc: FeatureDataError, written: int) -> None:
    """Leave the refusal in the staging directory (JSON {problem, fix, written}) for the orchestrator.

    The workload's process dies with it; the step reads this file to fail with the message alone.
    Several tasks may refuse at once: each replaces the file whole, so it is never half written.
    """
    path = os.path.join(staging, DATA_ERROR_FILE)
    partial = f"{path}.{os.getpid()}.tmp"
    try:
        with open(partial, "w", encoding="utf-8") as handle:
            json.dump({"problem": exc.problem, "fix": exc.fix, "written": written}, handle)
        os.replace(partial, path)
    except OSError:
        pass  # no staging to write to: the refusal itself still propagates, with its message


class Feature:
    """One request's view: the graph, the target feature and its store, opened for one step."""

    def __init__(self, request: dict):
        self.request = request
        self.specs: list[dict] = request["specs"]
        self.spec = next(s for s in self.specs if s["key"] == request["target"])
        self.key = self.spec["key"]
        self.id_columns: list[str] = list(self.spec["id_columns"])
        self.fields: list[str] = [f["key"] for f in self.spec["fields"]]
        self.is_root = not self.spec.get("deps")
        self.graph, self.classes = build_graph(self.specs)
        self.cls = self.classes[self.key]
        self.staging = request["staging"]
        self.branch: dict | None = request.get("branch")  # {"name", "subset", "set", "files"} on a branch's run

    def store(self, *, fallback: bool = True):
        """The feature's store; on a branch, the branch's store, with main's as its Metaxy fallback store
        unless `fallback` is False (a root feature's listing is compared with the branch's alone)."""
        with self.graph.use():
            if self.branch:
                from .branches import branch_store

                branch = branch_store(self.request["store"], self.branch["name"])
                return open_store(branch, fallback=[open_store(self.request["store"])] if fallback else None)
            return open_store(self.request["store"])

    def describe_store(self) -> str:
        if self.branch:
            from .branches import branch_store

            return f"branch {self.branch['name']}: {describe(branch_store(self.request['store'], self.branch['name']))}"
        return describe(self.request["store"])

    def start_branch(self) -> None:
        """Before a step writes: no merge into this store was cut short (main's rows and files could
        disagree), and, on a branch, its record exists (its first step starts it) and knows this
        feature's files. Raises FeatureDataError."""
        if self.request["store"].get("kind", "delta") in ("delta", "duckdb"):
            from .branch_steps import merge_in_flight

            merge_in_flight(self.request["store"])
        if self.branch:
            from .branches import ensure_record

            ensure_record(self.request["store"], self.branch, self.key, self.branch.get("files") or {})

    def path(self, name: str) -> str:
        return os.path.join(self.staging, name)


def _ids(frame: pl.DataFrame, id_columns: list[str], limit: int = SHOWN_IDS) -> str:
    rows = frame.select(id_columns).head(limit).rows()
    shown = ", ".join(str(r[0]) if len(r) == 1 else str(tuple(r)) for r in rows)
    more = frame.height - min(frame.height, limit)
    return shown + (f" (and {more} more)" if more > 0 else "")


def _key_expr(id_columns: list[str]) -> nw.Expr:
    if len(id_columns) == 1:
        return nw.col(id_columns[0]).cast(nw.String)
    return nw.concat_str([nw.col(c).cast(nw.String) for c in id_columns], separator="\x1f")


def _keys(frame: pl.DataFrame, id_columns: list[str]) -> list[str]:
    return nw.from_native(frame).select(_key_expr(id_columns).alias("k"))["k"].to_list()


def to_polars(frame: Any) -> pl.DataFrame:
    """Whatever the store's backend returns (Polars, Arrow, Ibis; lazy or not) as a Polars frame."""
    if isinstance(frame, pl.DataFrame):
        return frame
    if isinstance(frame, pl.LazyFrame):
        return frame.collect()
    if not isinstance(frame, nw.DataFrame | nw.LazyFrame):
        frame = nw.from_native(frame)
    if isinstance(frame, nw.LazyFrame):
        frame = frame.collect()
    return frame.to_polars()


def changed_fields(store, feature: Feature, stale: pl.DataFrame) -> tuple[dict[str, int], dict[str, list[str]]]:
    """For stale samples: which fields' provenance differs from what is stored (Metaxy does not say)."""
    if stale.is_empty():
        return {}, {}
    # Only the stale samples' stored rows: the table may hold millions.
    keys = _keys(stale, feature.id_columns)
    current = to_polars(
        store.read(feature.cls, columns=[*feature.id_columns, PROVENANCE],
                   filters=[_key_expr(feature.id_columns).is_in(keys)])
    ).rename({PROVENANCE: "_stored"})
    joined = stale.select([*feature.id_columns, PROVENANCE]).join(current, on=feature.id_columns, how="inner")
    counts: Counter[str] = Counter()
    examples: dict[str, list[str]] = {}
    for field in feature.fields:
        differs = joined.filter(
            pl.col(PROVENANCE).struct.field(field).ne_missing(pl.col("_stored").struct.field(field))
        )
        if differs.height:
            counts[field] = differs.height
            examples[field] = _keys(differs.head(SHOWN_IDS), feature.id_columns)
    return dict(counts), examples


def _summary(feature: Feature, store, new: pl.DataFrame, stale: pl.DataFrame, orphaned: pl.DataFrame) -> dict:
    fields, examples = changed_fields(store, feature, stale)
    return {
        "feature": feature.key,
        "store": feature.describe_store(),
        "new": new.height,
        "stale": stale.height,
        "orphaned": orphaned.height,
        "stale_fields": fields,
        "stale_examples": examples,
        "orphan_examples": _keys(orphaned.head(SHOWN_IDS), feature.id_columns) if orphaned.height else [],
        **({"branch": feature.branch["name"]} if feature.branch else {}),
    }


def _delete_orphans(store, feature: Feature, orphaned: pl.DataFrame) -> int:
    if orphaned.is_empty() or feature.request.get("orphans", "keep") != "delete":
        return 0
    if feature.branch:  # main's rows seen through the fallback are outside the branch's subset: never deleted
        orphaned = _on_branch(store, feature, orphaned)
        if orphaned.is_empty():
            return 0
    keys = _keys(orphaned, feature.id_columns)
    store.delete(feature.cls, filters=[_key_expr(feature.id_columns).is_in(keys)])
    return len(keys)


def _on_branch(store, feature: Feature, frame: pl.DataFrame) -> pl.DataFrame:
    """The samples (ids) of `frame` the branch's own table holds (main's, read through the fallback, are not)."""
    if frame.is_empty() or not store.has_feature(feature.cls):
        return frame.select(feature.id_columns).clear()
    mine = to_polars(store.read(feature.cls, columns=feature.id_columns, allow_fallback=False,
                                filters=[_key_expr(feature.id_columns).is_in(_keys(frame, feature.id_columns))]))
    return frame.select(feature.id_columns).join(mine, on=feature.id_columns, how="semi")


def _branch_is_new(feature: Feature) -> bool:
    """On a branch whose store does not exist yet (checked before opening it, which would create it)."""
    from .branches import branch_store

    return not os.path.exists(expand(branch_store(feature.request["store"], feature.branch["name"])["path"]))


def _upstream_missing(store, feature: Feature) -> None:
    for dep in feature.spec.get("deps", []):
        if feature.branch and not dep.get("optional") and (store is None or not store.has_feature(dep["feature"])):
            name = feature.branch["name"]
            raise FeatureDataError(
                f"upstream feature {dep['feature']} has not run on branch {name}: {feature.key} would read all of main's "
                "samples of it, not the branch's subset",
                f"materialize {dep['feature']} on the branch first (HPC_BRANCH={name}, or run tag hpc/branch={name}); "
                "samples unchanged from main are copied, not computed",
            )
        if not dep.get("optional") and not store.has_feature(dep["feature"]):
            raise FeatureDataError(
                f"upstream feature {dep['feature']} has no metadata in {describe(feature.request['store'])}",
                f"materialize {dep['feature']} first (it is upstream of {feature.key}), or check that both use the same store",
            )


def staleness_predicates(feature: Feature) -> list[nw.Expr]:
    """The request's `retry` ({"column": "status", "values": ["failed", ...]}) as Metaxy staleness predicates.

    A stored sample whose `column` holds one of `values` is stale even when its provenance is up to
    date (Metaxy evaluates the predicate on the stored metadata). No `retry`, or no values: [].
    Raises FeatureDataError when the column is not one of the feature's declared columns.
    """
    retry = feature.request.get("retry") or {}
    values = list(retry.get("values") or [])
    if not values:
        return []
    column = retry.get("column")
    if column not in feature.spec.get("columns", {}):
        raise FeatureDataError(
            f"{feature.key}: retry names column {column!r}, which the feature does not declare",
            f"retry on one of its columns: {', '.join(feature.spec.get('columns', {})) or 'none declared'}",
        )
    return [nw.col(column).is_in(values)]


def _retried(store, feature: Feature, predicates: list[nw.Expr], stale: pl.DataFrame) -> pl.DataFrame:
    """The stale samples (ids) whose stored row matches the retry predicates: there because of `retry`."""
    if not predicates or stale.is_empty() or not store.has_feature(feature.cls):
        return stale.select(feature.id_columns).clear()
    matched = to_polars(store.read(feature.cls, columns=feature.id_columns, filters=predicates))
    return stale.select(feature.id_columns).join(matched, on=feature.id_columns, how="semi")


def _seed_branch(store, feature: Feature, new: pl.DataFrame) -> tuple[pl.DataFrame, dict]:
    """On a branch: samples of the subset that main already holds as Metaxy expects them now are
    copied from main into the branch instead of computed (Metaxy compares a feature with the rows of
    its own store; its fallback serves upstream reads). Returns (new without them, {"from_main": n})."""
    from .branches import seed_from_main

    copied = seed_from_main(store, store.fallback_stores[0], feature.cls, feature.id_columns, new)
    return new.join(copied, on=feature.id_columns, how="anti"), {"from_main": copied.height}


def resolve(request: dict) -> dict:
    """Downstream feature: write the increment (new + stale samples) for the workload; count it.

    With `retry` in the request, stored samples matching it are stale too (counted in `stale`, with no
    changed field) and the summary adds `retried` (how many of the stale are there because of it,
    whether or not their provenance also changed), `retried_examples` and the `retry` itself.
    """
    feature = Feature(request)
    predicates = staleness_predicates(feature)
    if feature.branch and _branch_is_new(feature):
        _upstream_missing(None, feature)  # refused before anything of the branch exists
    with feature.graph.use():
        store = feature.store()
        with store.open("w" if feature.branch else "r"):
            _upstream_missing(store, feature)
            feature.start_branch()  # after the checks: a refused first run does not start the branch
            inc = store.resolve_update(feature.cls, staleness_predicates=predicates or None)
            new, stale, orphaned = (to_polars(f) for f in (inc.new, inc.stale, inc.orphaned))
            branch_counts = {}
            if feature.branch:
                new, branch_counts = _seed_branch(store, feature, new)
            summary = {**_summary(feature, store, new, stale, orphaned), **branch_counts}
            stored = to_polars(store.read(feature.cls, columns=feature.id_columns)).height if store.has_feature(feature.cls) else 0
            summary["up_to_date"] = stored - stale.height - orphaned.height
            retried = _retried(store, feature, predicates, stale)
    if predicates:
        summary.update(retried=retried.height, retried_examples=_keys(retried.head(SHOWN_IDS), feature.id_columns),
                       retry=request["retry"])
        retried.write_parquet(feature.path(RETRIED_FILE))
    increment = pl.concat(
        [new.with_columns(pl.lit("new").alias(STATUS_COLUMN)), stale.with_columns(pl.lit("stale").alias(STATUS_COLUMN))],
        how="diagonal_relaxed",
    )
    increment.write_parquet(feature.path(INCREMENT_FILE))
    return summary


def ingest(request: dict) -> dict:
    """Root feature: the listing the workload emitted becomes the feature's metadata."""
    feature = Feature(request)
    parts = sorted(glob.glob(feature.path(SAMPLES_GLOB)))
    if not parts:
        raise FeatureDataError(
            f"{feature.key}: the workload emitted no samples",
            "call FeatureJob.emit(frame, provenance=...) in the workload (an empty frame for an empty source)",
        )
    from .checks import validate_samples

    samples = validate_samples(feature, pl.concat([pl.read_parquet(p) for p in parts], how="vertical_relaxed"))
    listed = samples.height
    if feature.branch:
        from .branches import apply_subset

        samples = apply_subset(samples, feature.branch.get("subset"), feature.key, feature.id_columns)
    feature.start_branch()
    with feature.graph.use():
        store = feature.store(fallback=False)
        with store.open("w"):
            # The workload's samples are Polars: resolve in Polars, as "auto" would after warning about it.
            inc = store.resolve_update(feature.cls, samples=samples, versioning_engine="polars")
            new, stale, orphaned = (to_polars(f) for f in (inc.new, inc.stale, inc.orphaned))
            summary = _summary(feature, store, new, stale, orphaned)
            changed = pl.concat([new, stale], how="diagonal_relaxed")
            if changed.height:
                store.write(feature.cls, changed, materialization_id=request.get("materialization_id"))
            summary["deleted"] = _delete_orphans(store, feature, orphaned)
    summary["processed"] = new.height + stale.height
    summary["samples"] = listed
    if feature.branch:
        summary["subset"] = samples.height
    return summary


def _only(feature: Feature, increment: pl.DataFrame) -> list[nw.Expr] | None:
    """Limit a re-resolve to the increment's ids when every dependency shares them (1:1 lineage)."""
    identity = all((d.get("lineage") or {}).get("type", "identity") == "identity" for d in feature.spec.get("deps", []))
    if not identity or feature.request.get("orphans", "keep") == "delete":
        return None  # orphans must be found among all samples
    return [_key_expr(feature.id_columns).is_in(_keys(increment, feature.id_columns))]


def _not_rewritten(store, feature: Feature, increment: pl.DataFrame) -> pl.DataFrame:
    """Retried samples (ids) this run did not write again: their provenance alone would call them done.

    Known only when the request carries the run's materialization_id (every write of the run records it).
    """
    path, run = feature.path(RETRIED_FILE), feature.request.get("materialization_id")
    if run is None or not os.path.exists(path):
        return increment.clear()
    retried = pl.read_parquet(path, columns=feature.id_columns)
    if retried.is_empty():
        return retried
    stored = to_polars(store.read(feature.cls, columns=[*feature.id_columns, MATERIALIZATION_ID],
                                  filters=[_key_expr(feature.id_columns).is_in(_keys(retried, feature.id_columns))]))
    rewritten = stored.filter(pl.col(MATERIALIZATION_ID) == run)
    return retried.join(rewritten, on=feature.id_columns, how="anti")


def commit(request: dict) -> dict:
    """After a downstream workload: count what it really recorded, then apply the orphan policy."""
    feature = Feature(request)
    increment = pl.read_parquet(feature.path(INCREMENT_FILE), columns=feature.id_columns)
    with feature.graph.use():
        store = feature.store()
        with store.open("w"):
            inc = store.resolve_update(feature.cls, global_filters=_only(feature, increment))
            pending = pl.concat([to_polars(inc.new), to_polars(inc.stale), _not_rewritten(store, feature, increment)],
                                how="diagonal_relaxed").select(feature.id_columns)
            left = increment.join(pending, on=feature.id_columns, how="semi")
            deleted = _delete_orphans(store, feature, to_polars(inc.orphaned))
    return {
        "feature": feature.key,
        "processed": increment.height - left.height,
        "unprocessed": left.height,
        "unprocessed_examples": _keys(left.head(SHOWN_IDS), feature.id_columns),
        "deleted": deleted,
    }
