"""The attribute JSON schema rewritten so that jsonschema names the key at fault."""

from __future__ import annotations

from jsonschema import Draft202012Validator

from components.core.attribute_schema import sharpen

# The shape dagster derives: every attribute may also be a template string.
DERIVED = {
    "type": "object",
    "properties": {
        "resources": {"anyOf": [{"$ref": "#/$defs/Res"}, {"type": "string"}], "description": "d"},
        "args": {"anyOf": [{"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]}}, {"type": "string"}]},
        "mode": {"anyOf": [{"enum": ["fast", "slow"], "type": "string"}, {"type": "string"}]},
    },
    "additionalProperties": False,
    "$defs": {"Res": {"type": "object", "properties": {"cpus": {"anyOf": [{"type": "integer"}, {"type": "string"}]},
                                                         "time": {"anyOf": [{"type": "string"}, {"type": "null"}]}},
                      "additionalProperties": False}},
}


def _errors(schema, instance):
    return [(list(e.absolute_path), e.message) for e in Draft202012Validator(schema).iter_errors(instance)]


def test_a_misspelled_nested_key_is_named_instead_of_any_of_the_given_schemas():
    instance = {"resources": {"cpu": 2}}
    assert "not valid under any of the given schemas" in _errors(DERIVED, instance)[0][1]
    assert _errors(sharpen(DERIVED), instance) == [(["resources"], "Additional properties are not allowed ('cpu' was unexpected)")]


def test_a_list_where_a_scalar_belongs_names_the_accepted_types():
    (error,) = _errors(sharpen(DERIVED), {"args": [["a"]]})
    assert error == (["args", 0], "['a'] is not of type 'string', 'number', 'boolean', 'null'")


def test_text_attributes_take_any_scalar_so_the_load_check_can_say_quote_it():
    assert _errors(sharpen(DERIVED), {"resources": {"time": 5400, "cpus": 4}, "args": ["--x", False]}) == []


def test_what_was_valid_stays_valid_and_templates_still_pass():
    for instance in ({"resources": {"cpus": 2}}, {"resources": "{{ x }}"}, {"args": "{{ y }}"}, {"mode": "slow"}):
        assert _errors(DERIVED, instance) == [] and _errors(sharpen(DERIVED), instance) == []
    assert _errors(sharpen(DERIVED), {"resources": 5}) == [(["resources"], "5 is not of type 'string'")]


def test_the_input_is_not_modified():
    before = repr(DERIVED)
    sharpen(DERIVED)
    assert repr(DERIVED) == before


def test_text_stays_strict_in_definitions_the_load_check_does_not_walk():
    schema = {**DERIVED, "properties": {**DERIVED["properties"], "spec": {"$ref": "#/$defs/Spec"}},
              "$defs": {**DERIVED["$defs"], "Spec": {"type": "object", "properties": {"name": {"type": "string"}}}}}
    sharp = sharpen(schema, lenient_defs={"Res"})
    assert _errors(sharp, {"resources": {"time": 5400}}) == []
    assert _errors(sharp, {"spec": {"name": False}}) == [(["spec", "name"], "False is not of type 'string'")]
