"""This project's own checks; `make test` runs them, CI too.

- the definitions under defs/ load, and every cluster profile is valid;
- every asset's job script renders on every profile in clusters/ (no connection is made);
- all assets materialize on this machine (HPC_FORCE_CLUSTER=local, which wins over a `cluster:` in a
  defs.yaml), in a scratch copy of the project so the local metadata store of `make dev` is left
  alone; a second run finds nothing to redo.

An asset that cannot run on a laptop (a 4-GPU training job, say) can be left out of the local run
by listing its key in LOCAL_SKIP.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import dagster as dg
import pytest
import yaml

from components import cli
from components.workload import WorkloadComponent

ROOT = Path(__file__).resolve().parents[1]
LOCAL_SKIP: set[str] = set()
_SITE_ENV = ("HPC_CLUSTER", "HPC_FORCE_CLUSTER")


def _component_folders() -> list[Path]:
    """Folders under defs/ whose defs.yaml runs a workload (rendered with `hpc render`)."""
    folders = []
    for defs_yaml in sorted((ROOT / "defs").rglob("defs.yaml")):
        declared = yaml.safe_load(defs_yaml.read_text(encoding="utf-8")) or {}
        if str(declared.get("type", "")).startswith("components."):
            folders.append(defs_yaml.parent)
    return folders


@pytest.fixture(autouse=True)
def _no_site_choice(monkeypatch):
    # What a developer exported must not change what the tests check.
    for name in _SITE_ENV:
        monkeypatch.delenv(name, raising=False)


def _build_defs(project: Path, monkeypatch) -> dg.Definitions:
    monkeypatch.chdir(project)
    monkeypatch.syspath_prepend(str(project))
    for name in [m for m in sys.modules if m == "defs" or m.startswith("defs.")]:
        del sys.modules[name]
    return dg.ComponentTree.for_project(project).build_defs()


def test_definitions_load(monkeypatch):
    defs = _build_defs(ROOT, monkeypatch)
    keys = {key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys()}
    assert len(keys) >= len(_component_folders())


def test_no_conflict_markers_are_left():
    # `copier update` leaves both versions between markers where the template and you changed the same lines.
    markers = (b"<" * 7 + b" ", b">" * 7 + b" ")
    left = []
    for folder, dirs, files in os.walk(ROOT):
        # Not .venv, .git, .hpc or .dagster (environment, history, run data): copier writes none of them.
        dirs[:] = [d for d in dirs if d != "__pycache__" and (not d.startswith(".") or d in (".ci", ".github"))]
        for name in files:
            path = Path(folder, name)
            lines = path.read_bytes().splitlines() if path.is_file() else []
            left += [f"{path.relative_to(ROOT)}:{n}" for n, line in enumerate(lines, 1) if line.startswith(markers)]
    assert not left, "resolve the conflicts copier update left (keep what you want, delete the markers): " + ", ".join(left)


def test_cluster_profiles_are_valid(monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    assert cli.main(["clusters"]) == 0, capsys.readouterr().err


@pytest.mark.parametrize("folder", _component_folders(), ids=lambda p: p.relative_to(ROOT / "defs").as_posix())
def test_job_script_renders_on_every_cluster(folder, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    assert cli.main(["render", str(folder), "--all-clusters"]) == 0, capsys.readouterr().err
    scripts = capsys.readouterr().out
    for profile in (p.stem for p in (ROOT / "clusters").glob("*.yaml")):
        assert f"# ===== {profile} =====" in scripts


def _scratch_copy(dest: Path) -> Path:
    for name in ("pyproject.toml", "definitions.py"):
        shutil.copy2(ROOT / name, dest / name)
    for name in ("defs", "clusters", "workloads", ".dagster"):
        if (ROOT / name).exists():
            shutil.copytree(ROOT / name, dest / name, ignore=shutil.ignore_patterns("__pycache__", "logs", "storage"))
    (dest / "components").symlink_to(ROOT / "components", target_is_directory=True)
    return dest


def _materialize_all(project: Path, monkeypatch) -> dict[str, dg.AssetMaterialization]:
    defs = _build_defs(project, monkeypatch)
    keys = [k for k in defs.resolve_asset_graph().get_all_asset_keys() if k.to_user_string() not in LOCAL_SKIP]
    if not keys:
        pytest.skip("this project has no assets yet")
    result = defs.resolve_implicit_global_asset_job_def().execute_in_process(
        instance=dg.DagsterInstance.ephemeral(), asset_selection=keys, raise_on_error=False)
    failures = [f"{e.step_key}: {e.event_specific_data.error.message.strip()}"
                for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    assert result.success, "\n".join(failures)
    done = {e.asset_key.to_user_string(): e.event_specific_data.materialization
            for e in result.all_events if e.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION}
    assert sorted(done) == sorted(k.to_user_string() for k in keys)
    return done


def test_assets_materialize_locally(tmp_path, monkeypatch):
    project = _scratch_copy(tmp_path)
    monkeypatch.setenv("HPC_FORCE_CLUSTER", "local")
    first = _materialize_all(project, monkeypatch)
    second = _materialize_all(project, monkeypatch)
    # Incremental assets report what they processed: nothing is new or stale the second time.
    for key, materialization in second.items():
        processed = materialization.metadata.get("processed")
        if processed is not None and first[key].metadata.get("processed") is not None:
            assert processed.value == 0, f"{key} recomputed {processed.value} samples with nothing changed"
