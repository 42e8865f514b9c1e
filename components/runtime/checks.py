"""What a workload's listing and results must satisfy before they reach the store.

Metaxy would store what these refuse silently (duplicate ids, NULL provenance) or after a lossy
cast; each refusal is a FeatureDataError naming the samples and what to do.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from .casts import cast_exactly, type_name
from .graph import polars_schema
from .increment import PROVENANCE, SHOWN_IDS, Feature, FeatureDataError, _ids, _keys


def validate_samples(feature: Feature, samples: pl.DataFrame) -> pl.DataFrame:
    """Reject what Metaxy would store silently: missing columns, NULL provenance, duplicate ids."""
    missing = [c for c in [*feature.id_columns, PROVENANCE] if c not in samples.columns]
    if missing:
        raise FeatureDataError(
            f"{feature.key}: the samples lack column(s) {', '.join(missing)}",
            "emit the id columns and a provenance value per field (FeatureJob.emit(frame, provenance={...}))",
        )
    for field in feature.fields:
        null = samples.filter(pl.col(PROVENANCE).struct.field(field).is_null())
        if null.height:
            raise FeatureDataError(
                f"{feature.key}: {null.height} sample(s) have no provenance for field {field!r}: {_ids(null, feature.id_columns)}",
                "give every sample a value for every field (a file's size and mtime, or a content hash); "
                "a NULL would make the sample stale forever",
            )
    null_ids = samples.filter(pl.any_horizontal(pl.col(c).is_null() for c in feature.id_columns))
    if null_ids.height:
        raise FeatureDataError(
            f"{feature.key}: {null_ids.height} sample(s) have a NULL id column ({', '.join(feature.id_columns)})",
            "every sample needs a complete id",
        )
    dups = samples.filter(pl.struct(feature.id_columns).is_duplicated()).unique(subset=feature.id_columns, maintain_order=True)
    if dups.height:
        raise FeatureDataError(
            f"{feature.key}: duplicate ids in the samples: {_ids(dups, feature.id_columns)}",
            "each id may appear once; deduplicate the listing (or add a column to id_columns)",
        )
    return samples


def _change(value: Any, after: list | None, i: int) -> str:
    if after is None:
        return repr(value)
    return f"{value!r} would be lost" if after[i] is None else f"{value!r} would become {after[i]!r}"


def _cast_column(feature: Feature, frame: pl.DataFrame, column: str, target: pl.DataType) -> pl.Series:
    """One result column as its declared type; FeatureDataError naming the rows whose value would change."""
    cast, lossy = cast_exactly(frame[column], target)
    if lossy is None:
        return cast
    bad = frame.filter(lossy.lost)
    declared = feature.spec["columns"][column]
    values = bad[column].head(SHOWN_IDS).to_list()
    after = lossy.converted.filter(lossy.lost).head(SHOWN_IDS).to_list() if lossy.converted is not None else None
    shown = ", ".join(f"{key} ({_change(value, after, i)})"
                      for i, (key, value) in enumerate(zip(_keys(bad.head(SHOWN_IDS), feature.id_columns), values)))
    more = f" (and {bad.height - SHOWN_IDS} more)" if bad.height > SHOWN_IDS else ""
    actual = type_name(frame[column].dtype)
    if actual and actual != declared:
        retype = f"declare it as {actual} (columns: {{{column}: {actual}}}) in the feature's defs.yaml"
    else:  # the declared type is right but too narrow for these values (int is 64-bit)
        retype = "declare a type under `columns:` in the feature's defs.yaml that holds them (float or str)"
    raise FeatureDataError(
        f"{feature.key}: column {column!r} is declared {declared} but the workload gave {frame[column].dtype} values "
        f"that do not survive the conversion{f' ({lossy.reason})' if lossy.reason else ''} for {bad.height} sample(s): "
        f"{shown}{more}",
        f"convert them in the workload on purpose (round, parse or cast there), or {retype}",
    )


def check_output(feature: Feature, frame: pl.DataFrame, *, unique: bool = True) -> pl.DataFrame:
    """A workload's results: the declared columns with their declared types, ids from the increment.

    Raises FeatureDataError for missing columns, a value the cast to its declared type would change
    (3.7 into int, 2**40 into a narrower int, "3" into int) and duplicate ids; nothing is written then.
    """
    schema = polars_schema(feature.spec)
    missing = [c for c in [*feature.id_columns, *schema] if c not in frame.columns]
    if missing:
        raise FeatureDataError(
            f"{feature.key}: the results lack column(s) {', '.join(missing)}",
            f"return the id columns and every declared column ({', '.join(schema) or 'none declared'})",
        )
    frame = frame.select([*feature.id_columns, *(_cast_column(feature, frame, c, t) for c, t in schema.items())])
    dups = frame.filter(pl.struct(feature.id_columns).is_duplicated()) if unique else frame.clear()
    if dups.height:
        raise FeatureDataError(f"{feature.key}: duplicate ids in the results: {_ids(dups, feature.id_columns)}",
                               "write each sample once")
    return frame
