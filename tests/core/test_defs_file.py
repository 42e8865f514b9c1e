"""defs.yaml file-level mistakes: encoding, emptiness, duplicate keys, the document's shape, the type."""

from __future__ import annotations

import pytest

from components.core.defs_file import read_defs_file, unknown_type
from components.core.errors import ConfigError

GOOD = "type: components.SlurmAssetComponent\nattributes:\n  script: a.py\n"


def _write(tmp_path, content: str | bytes):
    file = tmp_path / "defs.yaml"
    if isinstance(content, bytes):
        file.write_bytes(content)
    else:
        file.write_text(content, encoding="utf-8")
    return file


def _error(tmp_path, content) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        read_defs_file(_write(tmp_path, content))
    return info.value


def test_a_good_file_gives_its_type_and_attributes(tmp_path):
    (doc,) = read_defs_file(_write(tmp_path, GOOD))
    assert (doc.type_name, doc.type_line) == ("components.SlurmAssetComponent", 1)
    assert doc.attributes.value[0][0].value == "script"


def test_several_documents_are_all_read(tmp_path):
    docs = read_defs_file(_write(tmp_path, GOOD + "---\n" + GOOD.replace("SlurmAsset", "MetaxyFeature")))
    assert [d.type_name for d in docs] == ["components.SlurmAssetComponent", "components.MetaxyFeatureComponent"]


def test_bytes_that_are_not_utf8_are_named_with_their_line(tmp_path):
    error = _error(tmp_path, GOOD.encode() + "  args: [café]\n".encode("latin-1"))
    assert error.location.line == 4
    assert "not UTF-8" in error.problem and "0xe9" in error.problem
    assert "UTF-8" in error.fix


@pytest.mark.parametrize("content", ["", "\n\n", "# only a comment\n", "---\n"])
def test_a_file_without_a_component_says_so(tmp_path, content):
    error = _error(tmp_path, content)
    assert "declares no component" in error.problem and "type:" in error.fix


def test_a_key_given_twice_names_both_lines(tmp_path):
    error = _error(tmp_path, GOOD + "  resources:\n    mem: 1G\n    mem: 2G\n")
    assert "'mem' is given twice, on lines 5 and 6" in error.problem
    assert (error.location.line, error.location.key) == (6, "attributes.resources.mem")


def test_invalid_yaml_gives_its_line(tmp_path):
    error = _error(tmp_path, GOOD + "  args: [a, b\n")
    assert "invalid YAML" in error.problem and error.location.line is not None


@pytest.mark.parametrize(
    ("content", "problem", "fix"),
    [
        ("- a\n- b\n", "must be a mapping", "type:"),
        ("attributes: {}\n", "has no `type:`", "dg list components"),
        ("type: [a]\n", "`type` must be the name", "components.SlurmAssetComponent"),
        ("type: components.X\nattribute: {}\n", "unknown top-level key 'attribute'", "did you mean 'attributes'?"),
    ],
)
def test_the_document_shape_is_checked(tmp_path, content, problem, fix):
    error = _error(tmp_path, content)
    assert problem in error.problem and fix in error.fix


def test_an_unknown_type_suggests_the_closest_registered_one(tmp_path):
    (doc,) = read_defs_file(_write(tmp_path, GOOD.replace("SlurmAsset", "SlurmAset")))
    error = unknown_type(doc, ["components.MetaxyFeatureComponent", "components.SlurmAssetComponent"])
    assert "unknown component type 'components.SlurmAsetComponent'" in error.problem
    assert error.fix.startswith("did you mean components.SlurmAssetComponent?")
    assert (error.location.line, error.location.key) == (1, "type")
