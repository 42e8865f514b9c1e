"""Partitions from YAML values, the array directive, and how squeue's array ids map to tasks."""

from __future__ import annotations

import datetime

import dagster as dg
import pytest

from components.core.array_run import SubmittedArray, task_states
from components.core.errors import ConfigError
from components.core.partitions import partitions_definition, preview_keys, task_context
from components.core.render import array_directive
from components.core.scheduler import QueueState, parse_queue_states


def test_static_keys_in_order():
    definition = partitions_definition(static=["north", "south", 2026])
    assert isinstance(definition, dg.StaticPartitionsDefinition)
    assert definition.get_partition_keys() == ["north", "south", "2026"]


def test_daily_window_with_end_and_timezone():
    definition = partitions_definition(daily={"start": "2026-01-01", "end": "2026-01-04", "timezone": "Europe/Vienna"})
    assert isinstance(definition, dg.DailyPartitionsDefinition)
    assert definition.get_partition_keys() == ["2026-01-01", "2026-01-02", "2026-01-03"]
    assert definition.timezone == "Europe/Vienna"


def test_unquoted_yaml_date_is_taken():
    definition = partitions_definition(daily={"start": datetime.date(2026, 1, 1), "end": datetime.date(2026, 1, 3)})
    assert definition.get_partition_keys() == ["2026-01-01", "2026-01-02"]


def test_hourly_and_dynamic():
    hourly = partitions_definition(hourly={"start": "2026-01-01-00:00", "end": "2026-01-01-03:00"})
    assert hourly.get_partition_keys() == ["2026-01-01-00:00", "2026-01-01-01:00", "2026-01-01-02:00"]
    dynamic = partitions_definition(dynamic="samples")
    assert isinstance(dynamic, dg.DynamicPartitionsDefinition) and dynamic.name == "samples"


@pytest.mark.parametrize(
    ("kwargs", "key", "problem", "fix"),
    [
        ({}, "partitions", "declares no kind", "give exactly one of"),
        ({"static": ["a"], "dynamic": "x"}, "partitions", "declares static and dynamic at once", "exactly one"),
        ({"static": []}, "partitions.static", "non-empty list", "static: [north, south]"),
        ({"static": ["a", "b", "a"]}, "partitions.static.2", "'a' is listed twice", "remove the duplicate"),
        ({"static": ["ok", "no space"]}, "partitions.static.1", "'no space' has characters", "letters, digits"),
        ({"static": [True]}, "partitions.static.0", "is not a string", "quote it"),
        ({"daily": {"start": "2026-13-01"}}, "partitions.daily.start", "'2026-13-01' is not a daily time", '"2026-01-01"'),
        ({"daily": {"end": "2026-01-01"}}, "partitions.daily.start", "needs a start", "add start"),
        ({"daily": {"start": "2026-01-02", "end": "2026-01-01"}}, "partitions.daily.end", "is not after start", "later than start"),
        ({"hourly": {"start": "2026-01-01"}}, "partitions.hourly.start", "is not a hourly time", '"2026-01-01-00:00"'),
        ({"hourly": {"start": "2026-01-01-00:00", "timezone": "Mars/Base"}}, "partitions.hourly.timezone",
         "'Mars/Base' is not a known time zone", "IANA"),
        ({"daily": {"start": "2026-01-01", "tz": "UTC"}}, "partitions.daily.tz", "unknown key 'tz'", "start, end and timezone"),
        ({"dynamic": "my samples"}, "partitions.dynamic", "is not a plain name", "letters, digits"),
    ],
)
def test_bad_values_name_the_key_and_the_fix(kwargs, key, problem, fix):
    with pytest.raises(ConfigError) as info:
        partitions_definition(**kwargs)
    assert info.value.location.key == key
    assert problem in info.value.problem, info.value.problem
    assert fix in (info.value.fix or ""), info.value.fix


def test_preview_keys():
    keys, note = preview_keys(partitions_definition(static=["a", "b", "c"]))
    assert keys == ["a", "b", "c"] and "one array of N tasks" in note
    keys, note = preview_keys(partitions_definition(dynamic="samples"))
    assert keys == [] and "dynamic partitions 'samples'" in note
    keys, note = preview_keys(partitions_definition(hourly={"start": "2020-01-01-00:00"}))
    assert len(keys) == 1000 and "shown: the first 1000" in note


def test_array_directive_caps_concurrency_at_the_task_count():
    assert array_directive(50, 8) == "--array=0-49%8"
    assert array_directive(3, 8) == "--array=0-2%3"
    assert array_directive(1, 1) == "--array=0-0%1"
    with pytest.raises(ValueError):
        array_directive(0, 8)


def test_task_context_narrows_the_run_to_one_partition():
    daily = partitions_definition(daily={"start": "2026-01-01"})
    data = task_context({"run_id": "r", "partition_key": None, "partition_key_range": {"start": "2026-01-01", "end": "2026-01-05"}},
                        "2026-01-03", daily)
    assert data["run_id"] == "r" and data["partition_key"] == "2026-01-03"
    assert data["partition_key_range"] == {"start": "2026-01-03", "end": "2026-01-03"}
    assert data["partition_time_window"] == {"start": "2026-01-03T00:00:00+00:00", "end": "2026-01-04T00:00:00+00:00"}
    assert task_context({}, "a", partitions_definition(static=["a"]))["partition_time_window"] is None


def test_squeue_array_ids_map_to_task_indices():
    # As Slurm 22.05 prints them with -O JobArrayID (seen on the test cluster).
    text = "1421_1|COMPLETED|None||0|\n1421_0|RUNNING|None|hpc-node1|0|\n1421_[2-5%2]|PENDING|JobArrayTaskLimit||0|\n1500_3|RUNNING|None|n|0|\n"
    states = task_states(parse_queue_states(text), "1421", 6)
    assert {i: s.state for i, s in states.items()} == {0: "RUNNING", 1: "COMPLETED", 2: "PENDING", 3: "PENDING", 4: "PENDING", 5: "PENDING"}
    assert states[3] == QueueState("PENDING", "JobArrayTaskLimit", "", 0)
    # Before any task started: one line for the whole array; a list of ranges.
    assert sorted(task_states(parse_queue_states("7_[0-3%2]|PENDING|None||0|"), "7", 4)) == [0, 1, 2, 3]
    assert sorted(task_states(parse_queue_states("7_[0,2,5-6]|PENDING|None||0|"), "7", 7)) == [0, 2, 5, 6]


def test_array_tag_round_trip():
    array = SubmittedArray("docker", "123", "/home/u/jobs/r/op-1", 50)
    assert SubmittedArray.from_tag(array.tag()) == array
    assert SubmittedArray.from_tag("docker|123|/d") is None
