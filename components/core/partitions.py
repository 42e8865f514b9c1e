"""Partitions declared in YAML -> a Dagster PartitionsDefinition, and what one partition's task is given.

Pure: no Dagster run, no connection. The component passes the `partitions:` mapping as plain
values; every mistake is a ConfigError naming the key (partitions.daily.start, ...) and the fix.
Exactly one kind is declared:

    static: [a, b, c]                              StaticPartitionsDefinition
    daily:  {start: "2026-01-01", end: ..., timezone: Europe/Vienna}
    hourly: {start: "2026-01-01-00:00", ...}       Daily/HourlyPartitionsDefinition
    dynamic: name                                  DynamicPartitionsDefinition(name=...)
"""

from __future__ import annotations

import datetime
import re
import zoneinfo
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import dagster as dg

from components.core.errors import ConfigError, Location

KINDS = ("static", "daily", "hourly", "dynamic")
# Keys reach job scripts (quoted) and file names of nothing: still, keep them printable and short.
_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@+=\-]{0,127}")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
# What each time window kind accepts as start/end (Dagster's own formats).
_FORMATS = {"daily": ("%Y-%m-%d", "2026-01-01"), "hourly": ("%Y-%m-%d-%H:%M", "2026-01-01-00:00")}
# `hpc render` and the array size of a preview: beyond this many keys the preview says so instead.
PREVIEW_LIMIT = 1000


@dataclass(frozen=True)
class TimeWindow:
    """A daily or hourly window as written: start (and end, exclusive) in the kind's format; timezone an IANA name."""

    start: str
    end: str | None = None
    timezone: str | None = None


def partitions_definition(
    static: Sequence[object] | None = None,
    daily: Mapping[str, object] | TimeWindow | None = None,
    hourly: Mapping[str, object] | TimeWindow | None = None,
    dynamic: str | None = None,
) -> dg.PartitionsDefinition:
    """The PartitionsDefinition of the one kind given. Raises ConfigError (key partitions.<kind>...)."""
    given = [kind for kind, value in zip(KINDS, (static, daily, hourly, dynamic)) if value is not None]
    if len(given) != 1:
        raise ConfigError(
            "partitions declares " + (f"{' and '.join(given)} at once" if given else "no kind"),
            fix="give exactly one of static (a list of keys), daily or hourly ({start: ...}) or dynamic (a name)",
            location=Location(key="partitions"),
        )
    if static is not None:
        return dg.StaticPartitionsDefinition(_static_keys(static))
    if dynamic is not None:
        if not isinstance(dynamic, str) or not _NAME.fullmatch(dynamic):
            raise ConfigError(f"dynamic partitions name {dynamic!r} is not a plain name",
                              fix="use letters, digits and _ (for example: samples)", location=Location(key="partitions.dynamic"))
        return dg.DynamicPartitionsDefinition(name=dynamic)
    kind = given[0]
    window = _window(kind, daily if kind == "daily" else hourly)
    cls = dg.DailyPartitionsDefinition if kind == "daily" else dg.HourlyPartitionsDefinition
    kwargs = {"start_date": window.start, "end_date": window.end}
    if window.timezone:
        kwargs["timezone"] = window.timezone
    return cls(**kwargs)


def _static_keys(raw: Sequence[object]) -> list[str]:
    if isinstance(raw, str | bytes) or not isinstance(raw, Sequence) or not raw:
        raise ConfigError("partitions.static must be a non-empty list of keys",
                          fix="write for example static: [north, south]", location=Location(key="partitions.static"))
    keys: list[str] = []
    for index, value in enumerate(raw):
        key = str(value)
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise ConfigError(f"partition key {value!r} is not a string",
                              fix="quote it in YAML, for example \"2026\" or \"no\"", location=Location(key=f"partitions.static.{index}"))
        if not _KEY.fullmatch(key):
            raise ConfigError(f"partition key {key!r} has characters a key may not have",
                              fix="use letters, digits and _ . : @ + = - (at most 128, starting with a letter or digit)",
                              location=Location(key=f"partitions.static.{index}"))
        if key in keys:
            raise ConfigError(f"partition key {key!r} is listed twice", fix="remove the duplicate",
                              location=Location(key=f"partitions.static.{index}"))
        keys.append(key)
    return keys


def _window(kind: str, raw: Mapping[str, object] | TimeWindow | None) -> TimeWindow:
    if isinstance(raw, TimeWindow):
        raw = {"start": raw.start, "end": raw.end, "timezone": raw.timezone}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"partitions.{kind} must be a mapping with start (and end, timezone)",
                          fix=f"write for example {kind}: {{start: \"{_FORMATS[kind][1]}\"}}", location=Location(key=f"partitions.{kind}"))
    unknown = sorted(set(raw) - {"start", "end", "timezone"})
    if unknown:
        raise ConfigError(f"partitions.{kind} has unknown key {unknown[0]!r}", fix="use start, end and timezone",
                          location=Location(key=f"partitions.{kind}.{unknown[0]}"))
    fmt, example = _FORMATS[kind]
    values: dict[str, datetime.datetime | None] = {}
    for name in ("start", "end"):
        value = raw.get(name)
        if value is None:
            if name == "start":
                raise ConfigError(f"partitions.{kind} needs a start", fix=f"add start: \"{example}\"",
                                  location=Location(key=f"partitions.{kind}.start"))
            values[name] = None
            continue
        if isinstance(value, datetime.date) and not isinstance(value, datetime.datetime):
            value = value.isoformat()  # YAML reads an unquoted 2026-01-01 as a date
        try:
            values[name] = datetime.datetime.strptime(str(value), fmt)
        except ValueError:
            raise ConfigError(f"partitions.{kind}.{name} {str(value)!r} is not a {kind} time ({fmt.replace('%', '')})",
                              fix=f"write it like \"{example}\"", location=Location(key=f"partitions.{kind}.{name}")) from None
    if values["end"] is not None and values["end"] <= values["start"]:
        raise ConfigError(f"partitions.{kind}.end {raw.get('end')!s} is not after start {raw.get('start')!s}",
                          fix="give an end later than start, or leave it out for windows up to now",
                          location=Location(key=f"partitions.{kind}.end"))
    timezone = raw.get("timezone")
    if timezone is not None:
        try:
            zoneinfo.ZoneInfo(str(timezone))
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ConfigError(f"partitions.{kind}.timezone {timezone!r} is not a known time zone",
                              fix="use an IANA name such as UTC or Europe/Vienna", location=Location(key=f"partitions.{kind}.timezone")) from None
    return TimeWindow(
        start=values["start"].strftime(fmt),
        end=None if values["end"] is None else values["end"].strftime(fmt),
        timezone=None if timezone is None else str(timezone),
    )


def preview_keys(definition: dg.PartitionsDefinition) -> tuple[list[str], str]:
    """The keys a preview shows as one array (all static keys, the time windows up to now) and a note
    on what a real run takes instead. A dynamic definition has no keys without an instance."""
    if isinstance(definition, dg.DynamicPartitionsDefinition):
        return [], f"dynamic partitions {definition.name!r}: the array has one task per key of the backfill"
    try:
        keys = list(definition.get_partition_keys())
    except Exception as exc:  # noqa: BLE001 - a preview says why it has no keys instead of failing
        return [], f"partition keys unknown here ({exc})"
    note = "a backfill of N partitions is one array of N tasks; shown: all partitions"
    if len(keys) > PREVIEW_LIMIT:
        note = f"{len(keys)} partitions; shown: the first {PREVIEW_LIMIT}; a backfill of N is one array of N tasks"
        keys = keys[:PREVIEW_LIMIT]
    return keys, note


def task_context(context_data: Mapping[str, object], key: str, definition: dg.PartitionsDefinition | None) -> dict:
    """A run's Pipes context data narrowed to one partition: partition_key, a one-key range and, for
    time windows, the partition's window (what the workload reads from `pipes.partition_key`)."""
    data = dict(context_data)
    data["partition_key"] = key
    data["partition_key_range"] = {"start": key, "end": key}
    window = None
    if isinstance(definition, dg.TimeWindowPartitionsDefinition):
        tw = definition.time_window_for_partition_key(key)
        window = {"start": tw.start.isoformat(), "end": tw.end.isoformat()}
    data["partition_time_window"] = window
    return data
