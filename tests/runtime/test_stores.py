"""Opening a metadata store: a local path that cannot be a folder is refused with its reason."""

from __future__ import annotations

import os

import pytest

from components.runtime.increment import FeatureDataError
from components.runtime.stores import open_store


@pytest.mark.parametrize("kind, name", [("delta", "store"), ("duckdb", "store.duckdb")])
def test_a_store_under_a_file_is_refused_with_the_file_named(tmp_path, kind, name):
    blocker = tmp_path / "data"
    blocker.write_text("not a folder")
    with pytest.raises(FeatureDataError) as info:
        open_store({"kind": kind, "path": str(blocker / "metaxy" / name)})
    assert f"{blocker} is a file, not a folder" in info.value.problem
    assert "store.path" in info.value.fix


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_a_store_without_permission_is_refused(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(FeatureDataError, match="Permission denied"):
        open_store({"kind": "delta", "path": str(locked / "metaxy")})
