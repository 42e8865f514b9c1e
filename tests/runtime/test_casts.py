"""A result column reaches the store only if every value survives the cast to its declared type."""

from __future__ import annotations

import datetime

import polars as pl
import pytest

from components.runtime.casts import cast_exactly, type_name

NS = pl.Datetime("ns")


@pytest.mark.parametrize(
    ("values", "source", "target", "lost"),
    [
        ([3.7, 2.0], pl.Float64, pl.Int64, [True, False]),        # a fraction would be cut off
        ([float("nan"), 1.0], pl.Float64, pl.Int64, [True, False]),  # NaN has no integer
        ([2**40, 1], pl.Int64, pl.Int32, [True, False]),          # overflow would become NULL
        ([2**60 + 1, 2], pl.Int64, pl.Float64, [True, False]),    # beyond float64's 53-bit mantissa
        (["3", "x"], pl.String, pl.Int64, [True, True]),          # text is never parsed
        (["true"], pl.String, pl.Boolean, [True]),
        ([datetime.datetime(2026, 1, 1, 12)], pl.Datetime("us"), pl.Date, [True]),  # the time of day
        ([1_500], NS, pl.Datetime("us"), [True]),                 # sub-microsecond part
        ([[1.5], [2.0]], pl.List(pl.Float64), pl.List(pl.Int64), [True, False]),
    ],
)
def test_values_that_do_not_survive_the_cast_are_named(values, source, target, lost):
    column = pl.Series("c", values, dtype=source)
    out, lossy = cast_exactly(column, target)
    assert lossy is not None and lossy.lost.to_list() == lost
    assert out.dtype == source  # nothing converted when refused


@pytest.mark.parametrize(
    ("values", "source", "target"),
    [
        ([3.0, None], pl.Float64, pl.Int64),
        ([1, 2], pl.Int32, pl.Int64),
        ([1, 2], pl.Int64, pl.Float64),
        ([1, 22], pl.Int64, pl.String),
        ([None, None], pl.Null, pl.Int64),
        ([datetime.date(2026, 1, 1)], pl.Date, pl.Datetime("us")),
        ([float("nan")], pl.Float64, pl.Float64),
    ],
)
def test_exact_casts_pass_with_the_declared_type(values, source, target):
    column = pl.Series("c", values, dtype=source, strict=False)
    out, lossy = cast_exactly(column, target)
    assert lossy is None and out.dtype == target
    assert out.cast(column.dtype).ne_missing(column).sum() == 0 or column.dtype == pl.Null


def test_type_name_suggests_the_columns_entry_for_a_polars_dtype():
    assert [type_name(d) for d in (pl.Float32(), pl.Int8(), pl.String(), pl.List(pl.Int16()), pl.Object())] == [
        "float", "int", "str", "list[int]", None]
