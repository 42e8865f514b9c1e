from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from components.core.errors import ConfigError
from components.core.graph_check import CODE_REFERENCES, check_graph


def _from_yaml(tmp_path: Path, folder: str, text: str, *specs: dg.AssetSpec) -> list[dg.AssetSpec]:
    """Specs as dagster loads them from a defs.yaml: with a code reference to that file."""
    file = tmp_path / "defs" / folder / "defs.yaml"
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(text)
    reference = dg.CodeReferencesMetadataValue(code_references=[dg.LocalFileCodeReference(file_path=str(file), line_number=1)])
    return [spec.merge_attributes(metadata={CODE_REFERENCES: reference}) for spec in specs]


NUMBERS = "type: components.SlurmAssetComponent\nattributes:\n  assets:\n    - key: raw/numbers\n  script: a.py\n"
SUMMARY = ("type: components.SlurmAssetComponent\nattributes:\n  assets:\n    - key: stats/summary\n"
           "      deps: [raw/numbrs]\n  script: b.py\n")


def test_a_declared_graph_passes_unchanged(tmp_path):
    defs = dg.Definitions(assets=[
        *_from_yaml(tmp_path, "numbers", NUMBERS, dg.AssetSpec(["raw", "numbers"])),
        *_from_yaml(tmp_path, "summary", SUMMARY, dg.AssetSpec(["stats", "summary"], deps=[["raw", "numbers"]])),
    ])
    assert check_graph(defs) is defs


def test_unknown_dep_names_the_line_of_the_dep_and_the_closest_key(tmp_path):
    defs = dg.Definitions(assets=[
        *_from_yaml(tmp_path, "numbers", NUMBERS, dg.AssetSpec(["raw", "numbers"])),
        *_from_yaml(tmp_path, "summary", SUMMARY, dg.AssetSpec(["stats", "summary"], deps=[["raw", "numbrs"]])),
    ])
    with pytest.raises(ConfigError) as caught:
        check_graph(defs)
    error = caught.value
    assert error.location.file == tmp_path / "defs" / "summary" / "defs.yaml"
    assert (error.location.line, error.location.key) == (5, "attributes.assets[0].deps[0]")
    assert "stats/summary depends on raw/numbrs, which no asset in this project declares" in error.problem
    assert error.fix.startswith("did you mean raw/numbers?")
    assert "dg.AssetSpec(['raw', 'numbrs'])" in error.fix


def test_a_dep_on_a_declared_external_asset_passes(tmp_path):
    # The documented way to depend on something made elsewhere: an AssetSpec in a Python file.
    defs = dg.Definitions(assets=[
        dg.AssetSpec(["raw", "numbrs"]),
        *_from_yaml(tmp_path, "summary", SUMMARY, dg.AssetSpec(["stats", "summary"], deps=[["raw", "numbrs"]])),
    ])
    assert check_graph(defs) is defs


def test_duplicate_key_names_both_files(tmp_path):
    defs = dg.Definitions(assets=[
        *_from_yaml(tmp_path, "numbers", NUMBERS, dg.AssetSpec(["raw", "numbers"])),
        *_from_yaml(tmp_path, "copy", "# copied\n" + NUMBERS, dg.AssetSpec(["raw", "numbers"])),
    ])
    with pytest.raises(ConfigError) as caught:
        check_graph(defs)
    text = str(caught.value)
    assert f"{tmp_path}/defs/numbers/defs.yaml:4 [attributes.assets[0].key]: asset key raw/numbers" in text
    assert f"declared here and again in {tmp_path}/defs/copy/defs.yaml:5 [attributes.assets[0].key]" in text


def test_every_problem_is_listed_at_once(tmp_path):
    defs = dg.Definitions(assets=[
        *_from_yaml(tmp_path, "numbers", NUMBERS, dg.AssetSpec(["raw", "numbers"])),
        *_from_yaml(tmp_path, "copy", NUMBERS, dg.AssetSpec(["raw", "numbers"])),
        *_from_yaml(tmp_path, "summary", SUMMARY, dg.AssetSpec(["stats", "summary"], deps=[["raw", "numbrs"]])),
    ])
    with pytest.raises(ConfigError, match="2 problems in the asset graph") as caught:
        check_graph(defs)
    assert "declared here and again" in str(caught.value) and "depends on raw/numbrs" in str(caught.value)
