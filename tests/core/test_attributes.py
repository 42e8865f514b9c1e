"""Attributes walked alongside a pydantic model: each mistake at its own line and key, with the fix."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import pytest
import yaml
from pydantic import BaseModel, ConfigDict

from components.core.attributes import check_attributes, closest
from components.core.yaml_scalars import DefsLoader


class Limits(BaseModel):
    model_config = ConfigDict(extra="forbid")
    on: list[str] | None = None
    cpus: int = 1
    mem: str | None = None
    exclusive: bool = False
    share: float = 1.0


class Job(BaseModel):
    model_config = ConfigDict(extra="forbid")
    script: str
    args: list[str | int | float] = []
    env: dict[str, str | int | float | bool] = {}
    mode: Literal["fast", "slow"] = "fast"
    limits: Limits = Limits()
    tags: list[str] | None = None
    version: str | int = "1"
    options: dict[str, Any] = {}
    weird: Annotated[list[Limits], "meta"] = []


def _errors(text: str) -> list[str]:
    node = yaml.compose(text, Loader=DefsLoader)
    return [str(e) for e in check_attributes(node, Job, Path("defs.yaml"))]


def _one(text: str) -> str:
    (error,) = _errors(text)
    return error


def test_a_valid_mapping_has_no_errors():
    text = """
script: a.py
args: [--count, 5000, --ratio, 0.5, "no"]
env: {A: "1.10", B: 4, C: "{{ env('X') }}"}
mode: slow
limits: {"on": [x], cpus: "4", mem: 1G, exclusive: yes, share: 2}
tags: ~
version: 2
options: {anything: [1, no]}
weird: [{cpus: 2}]
"""
    assert _errors(text) == []


@pytest.mark.parametrize(
    ("text", "where", "what", "fix"),
    [
        ("script: a.py\nargs: [--mode, no]\n", "defs.yaml:2 [attributes.args[1]]", "the boolean false", 'quote it: "no"'),
        ("script: a.py\nenv:\n  V: 1.10\n", "defs.yaml:3 [attributes.env.V]", "the number 1.1", 'quote it: "1.10"'),
        ("script: a.py\nlimits:\n  mem: 1:30\n", "defs.yaml:3 [attributes.limits.mem]", "the integer 90", 'quote it: "1:30"'),
        ("script: 0x1F\n", "defs.yaml:1 [attributes.script]", "the integer 31", 'quote it: "0x1F"'),
        ("script: a.py\nversion: 1.10\n", "defs.yaml:2 [attributes.version]", "the number 1.1", 'quote it: "1.10"'),
        ("script: a.py\nenv: {on: x}\n", "defs.yaml:2 [attributes.env.on]", "name on as the boolean true", 'quote it: "on"'),
        ("script: a.py\nargs: [a, ~]\n", "defs.yaml:2 [attributes.args[1]]", "null (no value)", 'quote it: "~"'),
        ("script: a.py\nlimits:\n  on: [a]\n", "defs.yaml:3 [attributes.limits.on]", "key on as the boolean true", 'quote it: "on":'),
    ],
)
def test_unquoted_scalars_yaml_would_change_must_be_quoted(text, where, what, fix):
    error = _one(text)
    assert error.startswith(where), error
    assert what in error and fix in error


def test_a_number_where_only_text_is_accepted_is_refused_with_an_example():
    error = _one("script: a.py\nlimits: {mem: 0}\n")
    assert error.startswith("defs.yaml:2 [attributes.limits.mem]: must be text") and 'quote it: "0"' in error


@pytest.mark.parametrize(
    ("text", "where", "message"),
    [
        ("script: a.py\nlimits: {cpu: 2}\n", "[attributes.limits.cpu]", "unknown key 'cpu' in limits\n  fix: did you mean 'cpus'? the keys of limits are: on, cpus, mem"),
        ("script: a.py\nlimits: {cpus: four}\n", "[attributes.limits.cpus]", "must be a whole number, not 'four'"),
        ("script: a.py\nlimits: {cpus: true}\n", "[attributes.limits.cpus]", "must be a whole number, not 'true'"),
        ("script: a.py\nlimits: {cpus: 1.5}\n", "[attributes.limits.cpus]", "must be a whole number, not '1.5'"),
        ("script: a.py\nlimits: {exclusive: maybe}\n", "[attributes.limits.exclusive]", "must be true or false"),
        ("script: a.py\nlimits: {share: lots}\n", "[attributes.limits.share]", "must be a number"),
        ("script: a.py\nlimits: 4\n", "[attributes.limits]", "must be a mapping of keys, not '4'"),
        ("script: a.py\nenv: {A: [1, 2]}\n", "[attributes.env.A]", "must be text, not a list"),
        ("script: a.py\nenv: [A]\n", "[attributes.env]", "must be a mapping of NAME: value, not a list"),
        ("script: a.py\nargs: --verbose\n", "[attributes.args]", "must be a list, not '--verbose'\n  fix: write a list, one item per entry, such as args: [--verbose]"),
        ("script: a.py\nmode: fats\n", "[attributes.mode]", "'fats' is not an accepted value\n  fix: did you mean 'fast'? accepted values: fast, slow"),
        ("script: a.py\nweird: [{cpus: x}]\n", "[attributes.weird[0].cpus]", "must be a whole number"),
        ("args: []\n", "[attributes.script]", "attributes needs the key 'script'"),
    ],
)
def test_shape_and_type_mistakes_name_the_key_and_what_is_accepted(text, where, message):
    error = _one(text)
    assert where in error.splitlines()[0] and message in error, error


def test_every_mistake_is_reported_in_file_order():
    errors = _errors("script: a.py\nargs: [no]\nlimits: {cpu: 1, mem: 1:00}\n")
    assert [e.split(" ")[0] for e in errors] == ["defs.yaml:2", "defs.yaml:3", "defs.yaml:3"]


def test_templates_are_left_to_dagster():
    assert _errors('script: a.py\nlimits: "{{ env(\'LIMITS\') }}"\nargs: "{{ x }}"\n') == []


def test_closest_finds_near_words_only():
    assert closest("cpu_per_task", ["cpus_per_task", "mem"]) == "cpus_per_task"
    assert closest("zzz", ["cpus_per_task", "mem"]) is None
