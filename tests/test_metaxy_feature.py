"""MetaxyFeatureComponent end to end on a real Delta store on disk: the five rounds of the issue.

The example pipeline in defs/media runs in a throw-away copy of the project; the clips are edited
between rounds and the counts come from the materializations Dagster recorded.
"""

from __future__ import annotations

import shutil

import dagster as dg
import pytest

from components.core.errors import ConfigError
from tests.conftest import build, edit, materialize_failing, materialize_ok, pick, root_cause

MEDIA = ["media/sample", "media/crop", "media/transcript"]


def _run(project, monkeypatch, keys=MEDIA):
    return materialize_ok(project, keys, monkeypatch)


def _failure(project, monkeypatch, keys) -> str:
    return materialize_failing(project, keys, monkeypatch)


@pytest.fixture
def clips(project):
    return project / "workloads" / "example_media"


def test_five_rounds_recompute_only_new_stale_and_dependent_fields(project, clips, monkeypatch):
    # Round 1: three clips, all new everywhere.
    r1 = _run(project, monkeypatch)
    for key in MEDIA:
        assert pick(r1[key], "new", "stale", "orphaned", "processed") == (3, 0, 0, 3), (key, r1[key])

    # Round 2: one changed (frames of clip-a), one added (clip-d), one removed (clip-c).
    (clips / "clip-a" / "frames.txt").write_text("frame-1-a edited\n")
    shutil.copytree(clips / "clip-b", clips / "clip-d")
    (clips / "clip-d" / "audio.txt").write_text("new clip d\n")
    shutil.rmtree(clips / "clip-c")
    r2 = _run(project, monkeypatch)
    assert pick(r2["media/sample"], "new", "stale", "orphaned", "processed") == (1, 1, 1, 2)
    assert r2["media/sample"]["stale_fields"] == {"frames": 1}
    assert pick(r2["media/crop"], "new", "stale", "orphaned", "processed") == (1, 1, 1, 2)
    assert r2["media/crop"]["stale_fields"] == {"image": 1}
    # The transcript reads only audio: clip-a's new frames do not make it stale.
    assert pick(r2["media/transcript"], "new", "stale", "orphaned", "processed") == (1, 0, 1, 1)
    assert r2["media/crop"]["deleted"] == 1  # orphans: delete

    # Round 3: no change; downstream features start no workload at all.
    jobs_before = set((project / ".hpc" / "jobs").iterdir())
    r3 = _run(project, monkeypatch)
    for key in MEDIA:
        assert pick(r3[key], "new", "stale", "orphaned", "processed") == (0, 0, 0, 0), (key, r3[key])
    for key in ("media/crop", "media/transcript"):
        assert r3[key]["job"] == "none: nothing to do"
    new_dirs = set((project / ".hpc" / "jobs").iterdir()) - jobs_before
    assert not any("crop" in d.name or "transcript" in d.name for d in new_dirs)

    # Round 4: change one upstream field (audio of clip-b): only the transcript is stale.
    (clips / "clip-b" / "audio.txt").write_text("re-recorded\n")
    r4 = _run(project, monkeypatch)
    assert pick(r4["media/sample"], "new", "stale", "processed") == (0, 1, 1)
    assert r4["media/sample"]["stale_fields"] == {"audio": 1}
    assert pick(r4["media/crop"], "new", "stale", "processed") == (0, 0, 0)
    assert pick(r4["media/transcript"], "new", "stale", "processed") == (0, 1, 1)
    assert r4["media/transcript"]["stale_fields"] == {"text": 1}

    # Round 5: a code_version bump re-processes every sample of that feature, and only that one.
    edit(project, "defs/media/crop/defs.yaml", '      code_version: "1"', '      code_version: "2"')
    r5 = _run(project, monkeypatch)
    assert r5["media/crop"]["processed"] == 3
    assert r5["media/transcript"]["processed"] == 0


def test_a_workload_that_skips_samples_fails_the_step_and_names_them(project, monkeypatch):
    edit(project, "workloads/crop_frames.py", "        samples = job.samples()",
         "        samples = job.samples().filter(pl.col('sample_id') != 'clip-b')")
    text = _failure(project, monkeypatch, MEDIA[:2])
    assert "wrote 2 of 3 samples" in text and "clip-b" in text


def test_results_outside_the_increment_are_refused_before_writing(project, monkeypatch):
    edit(project, "workloads/crop_frames.py", '        job.write(samples.select("sample_id")',
         '        job.write(samples.select((pl.col("sample_id") + "-intruder").alias("sample_id"))')
    text = _failure(project, monkeypatch, MEDIA[:2])
    assert "not in this run's increment" in text and "intruder" in text
    # The refusal is the step's failure, as one message with its fix; no traceback, no stderr dump.
    assert "fix: write only samples returned by samples()" in text and "nothing was written to the store" in text
    assert "Traceback" not in text and "exited with code" not in text


def test_a_result_the_column_type_would_change_fails_with_ids_and_column(project, monkeypatch):
    edit(project, "workloads/crop_frames.py", "width=pl.Series(widths, dtype=pl.Int64)",
         "width=pl.Series(widths, dtype=pl.Float64) + 0.5")
    text = _failure(project, monkeypatch, MEDIA[:2])
    assert "column 'width' is declared int" in text and "clip-a (" in text and "would become" in text
    assert "declare it as float" in text and "Traceback" not in text


def test_duplicate_ids_from_the_listing_are_rejected_with_the_ids(project, monkeypatch):
    edit(project, "workloads/list_media.py", "        job = FeatureJob.from_env()",
         "        frame = pl.concat([frame, frame.head(1)])\n        job = FeatureJob.from_env()")
    text = _failure(project, monkeypatch, MEDIA[:1])
    assert "duplicate ids" in text and "clip-a" in text and "nothing was written" in text
    assert not (project / ".hpc" / "data" / "metaxy").exists() or not any((project / ".hpc" / "data" / "metaxy").rglob("*.parquet"))


def test_null_provenance_is_rejected_with_the_ids(project, monkeypatch):
    edit(project, "workloads/list_media.py", "        job = FeatureJob.from_env()",
         "        frame = frame.with_columns(audio_sig=pl.when(pl.col('sample_id') == 'clip-b')"
         ".then(None).otherwise(pl.col('audio_sig')))\n        job = FeatureJob.from_env()")
    text = _failure(project, monkeypatch, MEDIA[:1])
    assert "no provenance for field 'audio'" in text and "clip-b" in text


def test_downstream_before_its_upstream_says_what_to_materialize(project, monkeypatch):
    text = _failure(project, monkeypatch, ["media/crop"])
    assert "media/sample has no metadata" in text and "materialize media/sample first" in text


def test_asset_dependencies_follow_feature_dependencies(project, monkeypatch):
    from tests.conftest import build

    defs = build(project)
    graph = defs.resolve_asset_graph()
    crop = graph.get(dg.AssetKey(["media", "crop"]))
    assert crop.parent_keys == {dg.AssetKey(["media", "sample"])}
    assert "metaxy" in crop.kinds


def test_schema_documents_every_field():
    from components import MetaxyFeatureComponent

    props = MetaxyFeatureComponent.get_model_cls().model_json_schema()["properties"]
    for name in ("feature", "id_columns", "fields", "columns", "deps", "store", "orphans", "require_all",
                 "script", "cluster", "resources", "submission"):
        assert props[name].get("description"), f"{name} has no description"


@pytest.mark.parametrize("body", ["", "attributes:\n", "attributes: {}\n"])
def test_a_feature_without_attributes_names_its_defs_yaml_and_what_it_needs(project, body):
    defs_file = project / "defs" / "media" / "caption" / "defs.yaml"
    defs_file.parent.mkdir()
    defs_file.write_text("type: components.MetaxyFeatureComponent\n" + body)
    with pytest.raises(Exception) as caught:
        build(project)
    error = root_cause(caught.value)
    assert isinstance(error, ConfigError), repr(error)  # not pydantic's "3 validation errors" without a file
    assert "media/caption/defs.yaml" in str(error) and "feature" in str(error) and "id_columns" in str(error)
