"""Casting a workload's result column to its declared type without changing any value.

Polars' cast truncates 3.7 to 3, wraps nothing but turns overflow into NULL when not strict, and
parses "3" as 3. A result that is stored must be the value the workload computed, so a cast is
accepted only when every value survives it: cast, cast back, compare. Text is never parsed into
numbers, dates or booleans: that is a guess about the workload's intent.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from .graph import COLUMN_TYPES


@dataclass(frozen=True)
class LossyCast:
    """Why some values of a column cannot take the declared type.

    lost: one bool per row, True where the value would be changed or dropped by the cast.
    reason: why no value of the column can pass, in words; empty when each value is judged by itself.
    converted: what the cast would have made of each value (NULL where it fails); None when not tried.
    """

    lost: pl.Series
    reason: str
    converted: pl.Series | None = None


def type_name(dtype: pl.DataType) -> str | None:
    """The `columns:` type name a Polars dtype corresponds to (int for every integer width), or None."""
    for name, (_, declared) in COLUMN_TYPES.items():
        if dtype == declared:
            return name
    if dtype.is_integer():
        return "int"
    if dtype.is_float():
        return "float"
    if isinstance(dtype, pl.Datetime):
        return "datetime"
    if isinstance(dtype, pl.List) and type_name(dtype.inner) in ("str", "int", "float"):
        return f"list[{type_name(dtype.inner)}]"
    return None


def cast_exactly(column: pl.Series, target: pl.DataType) -> tuple[pl.Series, LossyCast | None]:
    """`column` as `target`, and None; or the column unchanged and which rows would lose their value.

    A value survives when it is not NULL after the cast and casting it back gives the original
    (NaN counts as equal to NaN). Text becoming a non-text type never survives.
    """
    source = column.dtype
    if source == target or source == pl.Null:
        return column.cast(target), None
    present = column.is_not_null()
    if source in (pl.String, pl.Categorical) and target != pl.String:
        return column, LossyCast(present, "text is not parsed into other types")
    try:
        cast = column.cast(target, strict=False)
        back = cast.cast(source, strict=False)
    except pl.exceptions.PolarsError:
        return column, LossyCast(present, f"{source} values cannot be converted at all")
    lost = present & (cast.is_null() | back.ne_missing(column))
    if lost.any():
        return column, LossyCast(lost, "", cast)
    return cast, None
