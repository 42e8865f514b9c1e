"""RayDoclingComponent as a Ray job on the real test cluster: a Ray head and a worker on two Slurm
nodes, Docling in the job environment built on the cluster, the store on the cluster's filesystem."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import pytest

from tests.conftest import ROOT, copy_project, edit, materialize_ok
from tests.integration.conftest import ssh_as_user

pytestmark = pytest.mark.integration

KEYS = ["documents/source", "documents/markdown"]


@pytest.fixture
def shared_corpus():
    """The example documents plus a corrupt one, where the cluster's user can read them."""
    corpus = Path(f"/tmp/hpc-docs-{uuid.uuid4().hex[:8]}")
    shutil.copytree(ROOT / "workloads" / "example_documents", corpus)
    (corpus / "broken.docx").write_bytes(b"PK\x03\x04 not really a zip archive")
    corpus.chmod(0o755)
    for path in corpus.iterdir():
        path.chmod(0o644)
    yield corpus
    shutil.rmtree(corpus, ignore_errors=True)


@pytest.mark.timeout(1500)
def test_conversion_runs_as_a_two_node_ray_job_and_only_once(slurm_cluster, shared_corpus, tmp_path, monkeypatch):
    project = copy_project(tmp_path)
    run = uuid.uuid4().hex[:8]
    store, output = f"$HOME/dagster-hpc/test-stores/{run}", f"$HOME/dagster-hpc/test-markdown/{run}"
    edit(project, "defs/documents/defs.yaml", "path: workloads/example_documents", f"path: {shared_corpus}")
    edit(project, "defs/documents/defs.yaml", "  orphans: delete",
         f"  orphans: delete\n  cluster: docker\n  output: \"{output}\"\n  store: {{kind: delta, path: \"{store}\"}}")
    # One Ray node per Slurm node: a head and a worker, one actor each.
    edit(project, "defs/documents/defs.yaml", "    nodes: 1\n    cpus_per_task: 2\n    mem: 3G",
         "    nodes: 2\n    cpus_per_task: 1\n    mem: 1800M")
    monkeypatch.setenv("HPC_CLUSTER", "docker")

    first = materialize_ok(project, KEYS, monkeypatch)
    assert (first["documents/source"]["new"], first["documents/source"]["documents"]) == (7, 7)
    converted = first["documents/markdown"]
    assert (converted["converted"], converted["failed"], converted["skipped"]) == (6, 1, 0), converted
    assert converted["slurm_state"] == "COMPLETED"
    assert any(f.startswith("broken.docx: ") for f in converted["failures"])
    # The markdown lives on the cluster, written by the job user, private to them.
    listing = ssh_as_user(slurm_cluster, f"ls {output}/documents/markdown 2>/dev/null || ls {output}")
    assert "report-4.pdf.md" in listing and "broken.docx.md" not in listing
    log = ssh_as_user(slurm_cluster, "cat $(ls -dt $HOME/dagster-hpc/jobs/*/documents__markdown-* | head -1)/slurm-*.err")
    assert "ray: head" in log and "2 node(s)" in log

    second = materialize_ok(project, KEYS, monkeypatch)
    assert second["documents/markdown"]["job"] == "none: nothing to do"
    assert second["documents/markdown"]["skipped"] == 7

    (shared_corpus / "report-1.html").write_text("<html><body><h1>Changed</h1><p>Only this one.</p></body></html>")
    third = materialize_ok(project, KEYS, monkeypatch)
    assert (third["documents/markdown"]["converted"], third["documents/markdown"]["skipped"]) == (1, 6)
    ssh_as_user(slurm_cluster, f"rm -rf {store} {output}")
