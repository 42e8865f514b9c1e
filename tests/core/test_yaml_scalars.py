"""Which unquoted scalars YAML 1.1 turns into something other than the text typed."""

from __future__ import annotations

import pytest
import yaml

from components.core.yaml_scalars import DefsLoader, changed_text, quoted


def _node(text: str) -> yaml.Node:
    return yaml.compose(text, Loader=DefsLoader)


@pytest.mark.parametrize(
    ("typed", "value", "described"),
    [
        ("no", False, "the boolean false"),
        ("on", True, "the boolean true"),
        ("true", True, "the boolean true"),
        ("1.10", 1.1, "the number 1.1"),
        ("1:30:00", 5400, "the integer 5400"),  # base 60
        ("0x1F", 31, "the integer 31"),
        ("017", 15, "the integer 15"),  # octal
        ("1_000", 1000, "the integer 1000"),
        ("1.0e+3", 1000.0, "the number 1000.0"),
        ("~", None, "null (no value)"),
        ("null", None, "null (no value)"),
    ],
)
def test_scalars_that_yaml_changes_are_reported_with_what_they_became(typed, value, described):
    assert changed_text(_node(typed)) == (value, described)


@pytest.mark.parametrize("typed", ["5000", "0.5", "abc", "--mode", "2024-01-01", "0o17", "1e3", '"no"', "'1.10'", '"1:30:00"'])
def test_text_and_numbers_that_read_back_as_typed_are_left_alone(typed):
    # Dates stay text (dagster's loader drops the timestamp resolver); quoted scalars are never changed.
    assert changed_text(_node(typed)) is None


def test_the_loader_keeps_the_safe_loaders_timestamps():
    assert yaml.safe_load("2024-01-01") != "2024-01-01"
    assert yaml.load("2024-01-01", Loader=DefsLoader) == "2024-01-01"


def test_quoted_escapes_quotes_and_backslashes():
    assert quoted('a"b\\c') == '"a\\"b\\\\c"'
    assert yaml.safe_load(quoted('a"b\\c')) == 'a"b\\c'
