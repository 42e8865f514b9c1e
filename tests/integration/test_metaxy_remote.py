"""MetaxyFeatureComponent on the real test cluster: the store on the cluster's filesystem, the
Metaxy steps on its login node, the workloads as Slurm jobs; nothing to do means no job at all."""

from __future__ import annotations

import json
import uuid

import pytest

from tests.conftest import copy_project, edit, materialize, materialized, step_failures
from tests.integration.conftest import ssh_as_user

pytestmark = pytest.mark.integration

MEDIA = ["media/sample", "media/crop", "media/transcript"]


def _run(project, monkeypatch):
    result, instance = materialize(project, MEDIA, monkeypatch)
    assert result.success, step_failures(result)
    tags = instance.get_run_by_id(result.run_id).tags
    return {k: materialized(result, k) for k in MEDIA}, tags


def _on_the_cluster(tmp_path, monkeypatch):
    """A project copy whose media features run on the docker cluster, with a store of their own there."""
    project = copy_project(tmp_path)
    store = f"$HOME/dagster-hpc/test-stores/{uuid.uuid4().hex[:8]}"
    for name in ("sample", "crop", "transcript"):
        edit(project, f"defs/media/{name}/defs.yaml", "  orphans: delete",
             f"  orphans: delete\n  cluster: docker\n  store: {{kind: delta, path: \"{store}\"}}")
    monkeypatch.setenv("HPC_CLUSTER", "docker")
    return project, store


def test_features_run_as_slurm_jobs_and_skip_submission_when_nothing_changed(slurm_cluster, tmp_path, monkeypatch):
    project, store = _on_the_cluster(tmp_path, monkeypatch)

    first, tags = _run(project, monkeypatch)
    for key in MEDIA:
        assert (first[key]["new"], first[key]["processed"]) == (3, 3), (key, first[key])
    assert {"hpc/job/media__sample", "hpc/job/media__crop", "hpc/job/media__transcript"} <= set(tags)
    assert first["media/crop"]["slurm_state"] == "COMPLETED"
    # The store really lives on the cluster, written by the job user.
    listing = ssh_as_user(slurm_cluster, f"ls {store}/media")
    assert {"crop.delta", "sample.delta", "transcript.delta"} <= set(listing.split())

    second, tags = _run(project, monkeypatch)
    assert second["media/crop"]["job"] == "none: nothing to do"
    assert "hpc/job/media__crop" not in tags and "hpc/job/media__transcript" not in tags

    (project / "workloads/example_media/clip-b/frames.txt").write_text("other frames\n")
    third, _ = _run(project, monkeypatch)
    assert (third["media/crop"]["stale"], third["media/crop"]["processed"]) == (1, 1)
    assert third["media/crop"]["stale_fields"] == {"image": 1}
    assert third["media/transcript"]["processed"] == 0
    ssh_as_user(slurm_cluster, f"rm -rf {store}")


def test_results_the_runtime_refuses_in_a_slurm_job_fail_with_the_message_alone(slurm_cluster, tmp_path, monkeypatch):
    # The refusal is recorded on the cluster's filesystem and read back over SSH: no job stderr, no traceback.
    project, store = _on_the_cluster(tmp_path, monkeypatch)
    edit(project, "workloads/crop_frames.py", "width=pl.Series(widths, dtype=pl.Int64)",
         "width=pl.Series(widths, dtype=pl.Float64) + 0.5")
    result, _ = materialize(project, MEDIA[:2], monkeypatch)
    text = step_failures(result)
    assert not result.success and "column 'width' is declared int" in text and "would become" in text
    assert "nothing was written to the store for media/crop" in text and "Traceback" not in text
    assert "Slurm job" not in text  # the job's own failure (exit code, stderr tail) is not the report
    ssh_as_user(slurm_cluster, f"rm -rf {store}")


BRANCHES = """\
crop-v2:
  subset: {ids: [clip-b]}
  set:
    media/crop:
      fields: [{key: image, code_version: "2", deps: [{feature: media/sample, fields: [frames]}]}]
"""


def _hpc(project, monkeypatch, capsys, *args):
    from components import cli
    from tests.conftest import use_project

    use_project(project, monkeypatch)
    code = cli.main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_a_branch_runs_its_subset_on_the_cluster_and_merges_there(slurm_cluster, tmp_path, monkeypatch, capsys):
    # The branch's store and its steps (resolve, diff, merge, drop) live on the cluster, beside main's store.
    project, store = _on_the_cluster(tmp_path, monkeypatch)
    (project / "branches.yaml").write_text(BRANCHES)
    first, _ = _run(project, monkeypatch)
    assert first["media/crop"]["processed"] == 3

    monkeypatch.setenv("HPC_BRANCH", "crop-v2")
    branch, tags = _run(project, monkeypatch)
    assert (branch["media/sample"]["subset"], branch["media/sample"]["branch"]) == (1, "crop-v2")
    assert (branch["media/crop"]["new"], branch["media/crop"]["processed"]) == (1, 1) and "hpc/job/media__crop" in tags
    assert (branch["media/transcript"]["from_main"], branch["media/transcript"]["job"]) == (1, "none: nothing to do")
    listing = ssh_as_user(slurm_cluster, f"ls {store}.branches/crop-v2/media")
    assert {"crop.delta", "sample.delta", "transcript.delta"} <= set(listing.split())
    monkeypatch.delenv("HPC_BRANCH")

    code, out, err = _hpc(project, monkeypatch, capsys, "branch", "diff", "crop-v2", "--json")
    assert code == 0, err
    [summary] = json.loads(out)
    counts = {f["feature"]: (f["added"], f["changed"], f["same"]) for f in summary["features"]}
    assert counts == {"media/sample": (0, 0, 1), "media/crop": (0, 1, 0), "media/transcript": (0, 0, 1)}

    code, out, err = _hpc(project, monkeypatch, capsys, "branch", "merge", "crop-v2")
    assert code == 2 and "definitions main does not have" in err
    edit(project, "defs/media/crop/defs.yaml", 'code_version: "1"', 'code_version: "2"')
    code, out, err = _hpc(project, monkeypatch, capsys, "branch", "merge", "crop-v2")
    assert code == 0 and "media/crop 1 sample(s)" in out, err

    after, _ = _run(project, monkeypatch)
    assert (after["media/crop"]["stale"] + after["media/crop"]["new"], after["media/crop"]["processed"]) == (2, 2)
    code, out, err = _hpc(project, monkeypatch, capsys, "branch", "drop", "crop-v2")
    assert code == 0, err
    assert ssh_as_user(slurm_cluster, f"ls -d {store}.branches 2>/dev/null || echo gone").strip() == "gone"
    ssh_as_user(slurm_cluster, f"rm -rf {store}")
