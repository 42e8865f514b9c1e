"""The feature graph is validated across defs/ at load time, each problem at its file and line."""

from __future__ import annotations

import pytest

from components.core.errors import ConfigError
from tests.conftest import build, edit, line_of, root_cause

CROP = "defs/media/crop/defs.yaml"
SAMPLE = "defs/media/sample/defs.yaml"


def _error(project) -> str:
    with pytest.raises(Exception) as info:
        build(project)
    error = root_cause(info.value)
    assert isinstance(error, ConfigError), repr(error)
    return str(error)


@pytest.mark.parametrize(
    ("old", "new", "needle", "message"),
    [
        # A field dep on a feature that is not among deps: Metaxy would silently ignore it.
        ("        - feature: media/sample\n          fields: [frames]",
         "        - feature: media/other\n          fields: [frames]", "feature: media/other",
         "depends on 'media/other', which is not among this feature's deps"),
        ("          fields: [frames]", "          fields: [pixels]", "fields: [pixels]", "media/sample has no field 'pixels'"),
        ("    - feature: media/sample\n      select: [path]", "    - feature: media/samples\n      select: [path]",
         "feature: media/samples", "upstream feature 'media/samples' is not declared"),
        ("      select: [path]", "      select: [location]", "select: [location]", "has no column 'location'"),
        ("    width: int", "    width: integer", "width: integer", "unknown type 'integer'"),
        ("  feature: media/crop", "  feature: Media Crop", "feature: Media Crop", "is not valid"),
        ("    - key: image\n", "    - key: image\n    - key: image\n", "- key: image", "declared twice"),
    ],
)
def test_bad_feature_declarations_name_file_line_and_fix(project, old, new, needle, message):
    lines = edit(project, CROP, old, new)
    text = _error(project)
    assert message in text, text
    assert f"{CROP}:" in text and "fix:" in text, text
    if needle != "- key: image":
        assert f"{CROP}:{line_of(lines, needle)}" in text, text


def test_duplicate_feature_key_names_both_files(project):
    (project / "defs/media/crop2").mkdir()
    (project / "defs/media/crop2/defs.yaml").write_text((project / CROP).read_text())
    text = _error(project)
    assert "'media/crop' is also declared at" in text
    assert "defs/media/crop2/defs.yaml:" in text and f"{CROP}:" in text


def test_table_name_collision_is_refused(project):
    (project / "defs/media/crop2").mkdir()
    text = (project / CROP).read_text().replace("feature: media/crop", "feature: media/cr-op")
    (project / "defs/media/crop2/defs.yaml").write_text(text)
    edit(project, CROP, "feature: media/crop", "feature: media/cr_op")
    error = _error(project)
    assert "map to the same table 'media__cr_op'" in error


def test_cycle_is_refused_with_its_path(project):
    edit(project, SAMPLE, "  fields:\n    - key: frames",
         "  deps:\n    - feature: media/crop\n  fields:\n    - key: frames")
    text = _error(project)
    assert "cycle" in text and "media/crop -> media/sample -> media/crop" in text or "media/sample -> media/crop -> media/sample" in text


def test_upstream_on_another_store_is_refused(project):
    edit(project, CROP, "  script: crop_frames.py", "  script: crop_frames.py\n  store: {kind: duckdb, path: .hpc/other.duckdb}")
    text = _error(project)
    assert "must share one store" in text and f"{CROP}:" in text


def test_missing_store_secret_variable_is_a_load_error(project):
    edit(project, CROP, "  script: crop_frames.py", "  script: crop_frames.py\n  store: {kind: postgres}")
    text = _error(project)
    assert "needs url_env" in text
