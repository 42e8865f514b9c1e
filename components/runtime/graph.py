"""Metaxy features from plain specs (dicts that survive JSON): one builder for Dagster and the job.

A spec is what a MetaxyFeatureComponent declares in YAML, already validated by the orchestrator:
    {"key": "media/crop", "id_columns": ["sample_id"], "columns": {"crop_path": "str"},
     "deps": [{"feature": "media/sample", "select": [...], "rename": {...}, "filters": [...],
               "lineage": {"type": "identity"}, "optional": false}],
     "fields": [{"key": "image", "code_version": "1", "deps": [{"feature": "media/sample", "fields": ["frames"]}]}],
     "description": "..."}
A field without "deps" depends on every field of every upstream feature.
"""

from __future__ import annotations

import datetime
import re
from typing import Any

import metaxy as mx
import polars as pl
import pydantic
from metaxy.models.lineage import LineageRelationship

from .names import COLUMN_TYPE_NAMES

# Column types a YAML author may name, with the Python type for the Metaxy model and the Polars
# dtype a workload's frame is checked against.
COLUMN_TYPES: dict[str, tuple[Any, pl.DataType]] = {
    "str": (str, pl.String()),
    "int": (int, pl.Int64()),
    "float": (float, pl.Float64()),
    "bool": (bool, pl.Boolean()),
    "date": (datetime.date, pl.Date()),
    "datetime": (datetime.datetime, pl.Datetime("us")),
    "bytes": (bytes, pl.Binary()),
    "list[str]": (list[str], pl.List(pl.String())),
    "list[int]": (list[int], pl.List(pl.Int64())),
    "list[float]": (list[float], pl.List(pl.Float64())),
}
assert tuple(COLUMN_TYPES) == COLUMN_TYPE_NAMES, "runtime.names and runtime.graph disagree on column types"


def class_name(key: str) -> str:
    return "".join(part.capitalize() for part in re.split(r"[^0-9A-Za-z]+", key) if part) or "Feature"


def _lineage(raw: dict | None) -> LineageRelationship:
    raw = raw or {"type": "identity"}
    kind = raw.get("type", "identity")
    on = raw.get("on")
    if kind == "identity":
        return LineageRelationship.identity()
    if kind == "aggregation":
        return LineageRelationship.aggregation(on=on)
    if kind == "expansion":
        return LineageRelationship.expansion(on=on)
    raise ValueError(f"unknown lineage type {kind!r}")


def feature_spec(spec: dict) -> mx.FeatureSpec:
    deps = [
        mx.FeatureDep(
            feature=dep["feature"],
            select=tuple(dep["select"]) if dep.get("select") is not None else None,
            rename=dep.get("rename"),
            filters=dep.get("filters"),
            lineage=_lineage(dep.get("lineage")),
            optional=bool(dep.get("optional", False)),
        )
        for dep in spec.get("deps", [])
    ]
    fields = []
    for field in spec["fields"]:
        field_deps: Any = mx.SpecialFieldDep.ALL
        if field.get("deps") is not None:
            field_deps = [mx.FieldDep(feature=d["feature"], fields=list(d["fields"])) for d in field["deps"]]
        fields.append(mx.FieldSpec(key=field["key"], code_version=str(field.get("code_version", "1")),
                                   deps=field_deps if deps else []))
    return mx.FeatureSpec(
        key=spec["key"], id_columns=list(spec["id_columns"]), deps=deps, fields=fields,
        description=spec.get("description"),
    )


def build_graph(specs: list[dict]) -> tuple[mx.FeatureGraph, dict[str, type[mx.BaseFeature]]]:
    """Register every spec in a fresh graph (upstream first, as the caller orders them)."""
    graph = mx.FeatureGraph()
    classes: dict[str, type[mx.BaseFeature]] = {}
    with graph.use():
        for spec in specs:
            columns = {
                name: (COLUMN_TYPES[type_name][0] | None, None) for name, type_name in spec.get("columns", {}).items()
            }
            classes[spec["key"]] = pydantic.create_model(
                class_name(spec["key"]),
                __base__=mx.BaseFeature,
                __cls_kwargs__={"spec": feature_spec(spec)},
                **columns,
            )
    return graph, classes


def polars_schema(spec: dict) -> dict[str, pl.DataType]:
    return {name: COLUMN_TYPES[type_name][1] for name, type_name in spec.get("columns", {}).items()}
