"""Branch metadata stores: an experiment on a subset of samples, kept beside main's store until merged.

A branch `NAME` of a store at PATH lives next to it:
    Delta   PATH.branches/NAME/            the branch's tables
    DuckDB  PATH.branches/NAME.duckdb
    both    ....branches/NAME.json         its record: when it started, its subset, the files it wrote
Files a feature writes (Docling's markdown) go to DIR.branches/NAME/ beside their main DIR.

A step on a branch opens the branch store with main's as Metaxy's fallback store: a feature the
branch has not written yet is read from main, so only what the branch changes is computed. Each
feature that runs on the branch also copies main's unchanged rows of its subset into the branch
("seeds" them), so the features below it see the subset and nothing else.

The branch's own steps (`branch-list`, `branch-diff`, `branch-merge`, `branch-drop`) run where the
store is, like resolve, ingest and commit.
"""

from __future__ import annotations

import datetime
import glob
import hashlib
import json
import os
import shutil
import uuid
from typing import Any

import narwhals as nw
import polars as pl

from .increment import FeatureDataError, _key_expr, _keys, to_polars
from .names import BRANCH_NAME_PATTERN, BRANCHES_SUFFIX, beside
from .stores import expand, open_store

PROVENANCE = "metaxy_provenance"
PROVENANCE_BY_FIELD = "metaxy_provenance_by_field"
DATA_VERSION = "metaxy_data_version"
FEATURE_VERSION = "metaxy_feature_version"
UPDATED_AT = "metaxy_updated_at"
DELETED_AT = "metaxy_deleted_at"
SHOWN = 10
BRANCH_KINDS = ("delta", "duckdb")


class BranchError(FeatureDataError):
    """A branch request that cannot be carried out (nothing was written); problem and fix as FeatureDataError's."""


# --- where a branch lives ------------------------------------------------------------------------


def branches_dir(store: dict) -> str:
    """The folder holding a store's branches and their records, PATH.branches (unexpanded, as the
    store's path; a DuckDB file keeps its suffix, so `metaxy` and `metaxy.duckdb` never share one).
    Raises BranchError for a store kind that cannot branch."""
    if store.get("kind", "delta") not in BRANCH_KINDS:
        raise BranchError(
            f"branches need a delta or duckdb store; this feature's store is {store.get('kind')}",
            "run branches on a feature whose store is delta (the default) or duckdb",
        )
    return store["path"].rstrip("/") + BRANCHES_SUFFIX


def branch_store(store: dict, name: str) -> dict:
    """The store config of branch `name` of `store` (same kind and options)."""
    folder = branches_dir(store)
    path = f"{folder}/{name}.duckdb" if store.get("kind") == "duckdb" else f"{folder}/{name}"
    return {**store, "path": path}


def record_path(store: dict, name: str) -> str:
    return expand(f"{branches_dir(store)}/{name}.json")


def check_name(name: str) -> str:
    if not BRANCH_NAME_PATTERN.match(name or ""):
        raise BranchError(f"branch name {name!r} is not valid",
                          "use lower-case letters, digits, '.', '_' or '-' (at most 63), such as ocr-test")
    return name


# --- the record ----------------------------------------------------------------------------------


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _features_dir(store: dict, name: str) -> str:
    return expand(f"{branches_dir(store)}/{name}.features")


def read_record(store: dict, name: str) -> dict | None:
    """The branch's record with `features` ({key: {"files": {column: main dir}}}); None when it never ran."""
    try:
        with open(record_path(store, name), encoding="utf-8") as handle:
            record = json.load(handle)
    except FileNotFoundError:
        return None
    features = {}
    for path in sorted(glob.glob(f"{_features_dir(store, name)}/*.json")):
        with open(path, encoding="utf-8") as handle:
            entry = json.load(handle)
        features[entry["feature"]] = {"files": entry.get("files") or {}}
    return {**record, "features": features}


def _write_json(path: str, data: dict) -> None:
    """Replace `path` whole (readers see the old or the new file, never a part)."""
    partial = f"{path}.{uuid.uuid4().hex}.tmp"  # unique per writer, process or thread
    with open(partial, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=1, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, path)


def _write_record(store: dict, record: dict) -> None:
    _write_json(record_path(store, record["name"]), {k: v for k, v in record.items() if k != "features"})


def ensure_record(store: dict, branch: dict, feature: str, files: dict[str, str]) -> dict:
    """The branch's record, created on its first step (that moment is when the branch starts).

    `files` maps a column of `feature` to the main directory of the files it names; the record keeps
    it (one file per feature, so parallel steps never overwrite each other's) so that merge and drop
    know which files belong to the branch. The record appears whole or not at all (a hard link of a
    complete file), so steps of one run starting at once agree on one start time.
    Raises BranchError for a branch already merged.
    """
    name = check_name(branch["name"])
    # As readable as main's store beside it (the umask decides): a team sharing main shares its branches.
    os.makedirs(_features_dir(store, name), exist_ok=True)
    record = read_record(store, name)
    if record is None:
        fresh = {"name": name, "started_at": _now().isoformat(), "subset": branch.get("subset"),
                 "set": branch.get("set") or {}}
        partial = f"{record_path(store, name)}.{uuid.uuid4().hex}.new"
        _write_json(partial, fresh)
        try:
            os.link(partial, record_path(store, name))
        except FileExistsError:
            pass  # another step of the run started it first: its start time stands
        finally:
            os.unlink(partial)
        record = read_record(store, name)
    assert record is not None
    if record.get("merged_at"):
        raise BranchError(f"branch {name} was merged into main at {record['merged_at']}",
                          f"start a new experiment under another name, or drop it first (hpc branch drop {name})")
    if record.get("subset") != branch.get("subset") or record.get("set") != (branch.get("set") or {}):
        record = {**record, "subset": branch.get("subset"), "set": branch.get("set") or {}}
        _write_record(store, record)
    if record["features"].get(feature) != {"files": files}:
        _write_json(f"{_features_dir(store, name)}/{feature.replace('/', '__')}.json", {"feature": feature, "files": files})
        record["features"][feature] = {"files": files}
    return record


# --- the subset ----------------------------------------------------------------------------------


def _key_strings(frame: pl.DataFrame, id_columns: list[str]) -> list[str]:
    if len(id_columns) == 1:
        return [str(v) for v in frame[id_columns[0]].to_list()]
    return ["\x1f".join(map(str, row)) for row in frame.select(id_columns).iter_rows()]


def in_fraction(key: str, fraction: float, seed: int) -> bool:
    """Whether a sample id falls in a seeded fraction: the same ids for the same seed, on any machine."""
    digest = hashlib.sha256(f"{seed}\x1f{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") < fraction * 2**64


def apply_subset(samples: pl.DataFrame, subset: dict | None, key: str, id_columns: list[str]) -> pl.DataFrame:
    """The root feature's samples a branch keeps: `ids`, then `where`, then `fraction` (with `seed`).

    Each given part narrows the listing; none given keeps every sample. Raises BranchError for an id
    filter on a feature with several id columns, or a `where` naming a column the feature lacks.
    """
    if not subset:
        return samples
    kept = samples
    ids = subset.get("ids")
    if ids is not None:
        if len(id_columns) != 1:
            raise BranchError(f"the branch's subset.ids lists single ids, but {key} is identified by {', '.join(id_columns)}",
                              "use subset.where (a filter on its columns) or subset.fraction for this feature")
        kept = kept.filter(pl.col(id_columns[0]).cast(pl.String).is_in([str(i) for i in ids]))
    where = subset.get("where")
    if where:
        from metaxy.models.filter_expression import parse_filter_string

        missing = [c for c in _filter_columns(where) if c not in samples.columns]
        if missing:
            raise BranchError(f"the branch's subset.where ({where}) names column(s) {', '.join(missing)}, which {key} lacks",
                              f"filter on its columns: {', '.join(c for c in samples.columns if not c.startswith('metaxy_'))}")
        kept = nw.from_native(kept).filter(parse_filter_string(where)).to_native()
    fraction = subset.get("fraction")
    if fraction is not None:
        seed = int(subset.get("seed", 0))
        mask = [in_fraction(k, float(fraction), seed) for k in _key_strings(kept, id_columns)]
        kept = kept.filter(pl.Series(mask, dtype=pl.Boolean))
    return kept


def _filter_columns(where: str) -> list[str]:
    import sqlglot
    from sqlglot import exp

    return sorted({c.name for c in sqlglot.parse_one(where).find_all(exp.Column)})


# --- rows compared with main ---------------------------------------------------------------------


def latest(store, cls, id_columns: list[str], ids: pl.DataFrame | None = None, *, deleted: bool = False) -> pl.DataFrame:
    """The newest row per sample of a feature in this store alone, whatever its feature version;
    with `deleted`, a sample whose newest row is a deletion (metaxy_deleted_at set) is kept as that row."""
    if not store.has_feature(cls):
        return pl.DataFrame()
    filters = None
    if ids is not None:
        if ids.is_empty():
            return pl.DataFrame()
        filters = [_key_expr(id_columns).is_in(_keys(ids, id_columns))]
    return to_polars(store.read(cls, allow_fallback=False, with_feature_history=True, filters=filters,
                                include_soft_deleted=deleted))


def compare(branch_rows: pl.DataFrame, main_rows: pl.DataFrame, id_columns: list[str]) -> pl.DataFrame:
    """Branch rows with `_change`: "added" (main lacks the id, or deleted it), "changed" or "same"
    (main's live row has its provenance and data version), and main's provenance by field, feature
    version and `_main_changed_at` (when main last wrote or deleted the sample; null if never)."""
    if branch_rows.is_empty():
        return branch_rows
    if main_rows.is_empty():
        return branch_rows.with_columns(pl.lit("added").alias("_change"), pl.lit(None).alias("_main_changed_at"),
                                        pl.lit(None, dtype=pl.String).alias("_main_feature_version"),
                                        pl.lit(None).alias("_main_by_field"))
    theirs = main_rows.select(
        *id_columns,
        pl.col(PROVENANCE).alias("_main_provenance"), pl.col(DATA_VERSION).alias("_main_data_version"),
        pl.col(PROVENANCE_BY_FIELD).alias("_main_by_field"), pl.col(FEATURE_VERSION).alias("_main_feature_version"),
        pl.max_horizontal(UPDATED_AT, DELETED_AT).alias("_main_changed_at"),
        pl.col(DELETED_AT).is_not_null().alias("_main_deleted"),
    )
    joined = branch_rows.join(theirs, on=id_columns, how="left")
    same = (pl.col(PROVENANCE) == pl.col("_main_provenance")) & (pl.col(DATA_VERSION) == pl.col("_main_data_version"))
    return joined.with_columns(
        pl.when(pl.col("_main_deleted").is_null() | pl.col("_main_deleted")).then(pl.lit("added"))
        .when(same).then(pl.lit("same")).otherwise(pl.lit("changed")).alias("_change")
    ).drop("_main_deleted")


def seed_from_main(branch_only, main, cls, id_columns: list[str], candidates: pl.DataFrame) -> pl.DataFrame:
    """Of `candidates` (increment rows with the provenance Metaxy expects), those main already holds
    as expected: their main rows are copied into the branch. Returns the ids seeded."""
    if candidates.is_empty():
        return candidates.select(id_columns)
    with main.open("r"):
        stored = latest(main, cls, id_columns, candidates.select(id_columns))
    if stored.is_empty():
        return candidates.select(id_columns).clear()
    expected = candidates.select(*id_columns, pl.col(PROVENANCE).alias("_expected"))
    rows = stored.join(expected, on=id_columns, how="inner").filter(pl.col(PROVENANCE) == pl.col("_expected")).drop("_expected")
    if rows.height:
        branch_only.write(cls, rows, preserve_feature_version=True,
                          materialization_id=_first(rows, "metaxy_materialization_id"))
    return rows.select(id_columns)


def _first(rows: pl.DataFrame, column: str) -> str | None:
    return rows[column][0] if column in rows.columns and rows.height else None


__all__ = ["BranchError", "apply_subset", "beside", "branch_store", "branches_dir", "check_name", "compare",
           "ensure_record", "read_record", "record_path", "seed_from_main"]


def as_json(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def remove_path(path: str) -> bool:
    """Remove a file or folder; whether something was there."""
    path = expand(path)
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
        return True
    if os.path.lexists(path):
        os.unlink(path)
        return True
    return False


def open_branch(store: dict, name: str):
    """(the branch's store alone, main's store)."""
    return open_store(branch_store(store, name)), open_store(store)
