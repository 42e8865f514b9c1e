"""Scaffolded Metaxy features and Docling conversions pass the checks and run as written."""

from __future__ import annotations

from pathlib import Path

import click
import dagster as dg
import pytest

from components.feature_scaffold import (DoclingScaffoldParams, FeatureScaffoldParams, MetaxyFeatureScaffolder,
                                         RayDoclingScaffolder)
from tests.conftest import build, materialize_ok, run_dg


def _scaffold(project: Path, scaffolder, name: str, **params) -> Path:
    target = project / "defs" / name
    target.mkdir(parents=True)  # as dg does before calling the scaffolder
    metaxy = scaffolder is MetaxyFeatureScaffolder
    params_cls = FeatureScaffoldParams if metaxy else DoclingScaffoldParams
    type_name = "components.MetaxyFeatureComponent" if metaxy else "components.RayDoclingComponent"
    scaffolder().scaffold(dg.ScaffoldRequest(type_name=type_name, target_path=target, scaffold_format="yaml",
                                             project_root=project, params=params_cls(**params)))
    return target


def test_scaffolded_root_and_downstream_features_run_as_written(project, monkeypatch):
    # The downstream one through dg itself: its flags and registration, as a user types it.
    result = run_dg(project, "scaffold", "defs", "components.MetaxyFeatureComponent", "media/caption", "--upstream", "media/sample")
    assert result.returncode == 0, result.stdout + result.stderr
    workload = (project / "workloads" / "caption.py").read_text()
    assert "#   path: str" in workload and "job.samples()" in workload  # the columns samples() returns
    _scaffold(project, MetaxyFeatureScaffolder, "files", source="workloads/example_media/clip-a")
    counts = materialize_ok(project, ["files", "media/sample", "media/caption"], monkeypatch)
    assert (counts["files"]["samples"], counts["files"]["processed"]) == (2, 2)  # frames.txt, audio.txt
    assert (counts["media/caption"]["new"], counts["media/caption"]["processed"]) == (3, 3)


def test_a_scaffolded_docling_conversion_builds_with_its_own_example_document(project):
    _scaffold(project, RayDoclingScaffolder, "reports")
    assert (project / "workloads" / "reports_documents" / "example.md").is_file()
    keys = {k.to_user_string() for k in build(project).resolve_all_asset_keys()}
    assert {"reports/source", "reports/markdown"} <= keys


@pytest.mark.parametrize(
    ("name", "params", "expected"),
    [
        ("media/cap", {"upstream": "media/sampel"}, "did you mean media/sample?"),
        ("media/crop2", {"feature": "media/crop"}, "media/crop is already declared"),
        ("crop_frames", {"upstream": "media/sample"}, "workloads/crop_frames.py already exists"),
        ("listing", {"source": "no/such/dir"}, "source directory no/such/dir does not exist"),
        ("Bad Name!", {"feature": "Bad Name!"}, "not a valid feature key"),
    ],
)
def test_refused_scaffolds_say_why_and_leave_nothing_behind(project, name, params, expected):
    before = sorted(p.relative_to(project) for p in (project / "workloads").rglob("*"))
    with pytest.raises(click.ClickException) as caught:
        _scaffold(project, MetaxyFeatureScaffolder, name, **params)
    assert expected in caught.value.message and "fix:" in caught.value.message
    assert not (project / "defs" / name).exists()
    assert sorted(p.relative_to(project) for p in (project / "workloads").rglob("*")) == before


def test_a_default_script_name_never_shadows_the_standard_library(project, monkeypatch):
    _scaffold(project, MetaxyFeatureScaffolder, "numbers2/json", upstream="media/sample")
    assert (project / "workloads" / "json_job.py").is_file()
    assert "media/sample" in {k.to_user_string() for k in build(project).resolve_all_asset_keys()}
