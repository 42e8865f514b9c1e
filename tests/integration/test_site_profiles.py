"""The shipped VSC-5, Leonardo and MUSICA profiles, with only the login host swapped for the test
cluster, run every example asset with `dg launch` (the default multiprocess executor) on their first
try; Docling (on a two-node Ray cluster for Leonardo) reports a corrupt document without failing the rest. The test cluster is site-like: Python only through `module load` (modulefiles named as each
site names them), $DATA/$WORK from the login shell, and compute nodes without a route out."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import ROOT, VENV_BIN, copy_project, edit
from tests.integration.conftest import ssh_as_user

pytestmark = pytest.mark.integration

# site -> (account variable, account, base dir on the test cluster, modules its venv must load)
SITES = {
    "vsc5": ("VSC5_ACCOUNT", "p71234", "$DATA/dagster-hpc", ["python/3.11.2-gcc-12.2.0-q4vx2pc"]),
    "leonardo": ("LEONARDO_ACCOUNT", "EUHPC_D20_063", "$WORK/dagster-hpc", ["python/3.11.2-gcc-12.2.0-q4vx2pc"]),
    "musica": ("MUSICA_ACCOUNT", "p72000", "$DATA/dagster-hpc", ["ASC/2025.06", "Python/3.11.2-GCCcore-12.2.0"]),
}
# The login host, and PyTorch's index, which this machine cannot reach (its torch wheel lies in /opt/wheels).
SWAP = ("ssh: {host: 127.0.0.1, port: 2222, user: slurmuser, auth: key, key_file: $HPC_TEST_CLUSTER_DIR/ssh/id_ed25519, "
        "known_hosts: $HPC_TEST_CLUSTER_DIR/ssh/known_hosts, certificate_file: null}\n"
        "environment: {venv: {extra_index_urls: []}}\n")


def _launch(project: Path, site: str, home: Path) -> subprocess.Popen:
    var, account, _, _ = SITES[site]
    env = {**os.environ, var: account, "HPC_CLUSTER": site, "DAGSTER_HOME": str(home), "PYTHONPATH": str(project),
           "VIRTUAL_ENV": str(VENV_BIN.parent), "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}", "NO_COLOR": "1"}
    return subprocess.Popen([str(VENV_BIN / "dg"), "launch", "--assets", "*"], cwd=project, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.timeout(1800)
def test_site_profiles_run_every_example_asset_on_their_first_job(slurm_cluster, tmp_path):
    corpus = Path(f"/tmp/hpc-site-docs-{uuid.uuid4().hex[:8]}")
    shutil.copytree(ROOT / "workloads" / "example_documents", corpus)
    (corpus / "broken.docx").write_bytes(b"PK\x03\x04 not really a zip archive")
    os.system(f"chmod -R a+rX {corpus}")
    tag = uuid.uuid4().hex[:8]
    projects, homes = {}, {}
    for site, (_, _, base, _) in SITES.items():
        (tmp_path / site).mkdir()
        projects[site] = project = copy_project(tmp_path / site)
        # `dg launch --assets '*'` refuses a partitioned asset without --partition; the partitioned
        # example runs as a job array in test_partition_arrays.py.
        shutil.rmtree(project / "defs" / "regions")
        # The sites' nodes (128 cores on VSC-5) would size the ensemble's allocation for its steps side by
        # side; the test nodes have 2 cores, shared by three sites at once: an explicit one-core shape.
        for folder in ("member_1", "member_2", "spread"):
            edit(project, f"defs/ensemble/{folder}/defs.yaml", "    allocation: run",
                 '    allocation: run\n    allocation_resources: {cpus_per_task: 1, mem: 1500M, time: "00:15:00"}')
        edit(project, "defs/documents/defs.yaml", "path: workloads/example_documents", f"path: {corpus}")
        # One CPU per node and Docling job, so that the three sites' jobs fit the two test nodes at once.
        if site == "leonardo":
            # Docling on a two-node Ray cluster: a head and a worker on two Slurm nodes, one actor each.
            edit(project, "defs/documents/defs.yaml", "    nodes: 1\n    cpus_per_task: 2\n    mem: 3G",
                 "    nodes: 2\n    cpus_per_task: 1\n    mem: 1800M")
            # Explicit actors: `auto` would keep so small a corpus in the workload's process.
            edit(project, "defs/documents/defs.yaml", "    workers: auto", "    workers: 2")
        else:
            edit(project, "defs/documents/defs.yaml", "    cpus_per_task: 2\n    mem: 3G", "    cpus_per_task: 1\n    mem: 1800M")
        # A data dir of this test's own (outputs and the Metaxy store); the envs stay in the site's base dir.
        (project / "clusters" / "overrides" / f"{site}.yaml").write_text(SWAP + f"paths: {{data_dir: {base}-test-{tag}}}\n")
        homes[site] = tmp_path / f"dagster-{site}"
        shutil.copytree(project / ".dagster", homes[site])
    started = time.monotonic()
    runs = {site: _launch(projects[site], site, homes[site]) for site in SITES}
    outputs = {site: run.communicate(timeout=1500)[0] for site, run in runs.items()}
    elapsed = time.monotonic() - started
    try:
        for site, run in runs.items():
            assert run.returncode == 0, f"{site}: dg launch failed\n{outputs[site][-6000:]}"
            assert "RUN_SUCCESS" in outputs[site], outputs[site][-3000:]
        for site, (_, _, base, modules) in SITES.items():
            base_dir = ssh_as_user(slurm_cluster, f"bash -lc 'printf %s {base}'")
            # The venv the first job built, loading exactly the site's Python module.
            activate = ssh_as_user(slurm_cluster, f"cat {base_dir}/envs/venv-*/hpc-activate.sh")
            for module in modules:
                assert f"module load {module}" in activate, (site, activate)
            data_dir = base_dir + f"-test-{tag}"
            numbers = ssh_as_user(slurm_cluster, f"head -c 200 {data_dir}/raw/numbers.csv")
            assert numbers.splitlines()[0] == "value", (site, numbers)
            summary = ssh_as_user(slurm_cluster, f"cat {data_dir}/stats/summary.txt")
            assert summary.startswith("count=5000 "), (site, summary)
            # Docling converted every document but the corrupt one (on Leonardo, on a Ray cluster over both nodes).
            markdown = ssh_as_user(slurm_cluster, f"find {data_dir} -name '*.md' -path '*documents/markdown*' -printf '%f\\n'")
            assert "report-4.pdf.md" in markdown and "broken.docx.md" not in markdown, (site, markdown)
            log = ssh_as_user(slurm_cluster, f"cat $(ls -dt {base_dir}/jobs/*/documents__markdown-* | head -1)/slurm-*.err")
            assert "ray: head" in log and f"{2 if site == 'leonardo' else 1} node(s)" in log, (site, log[-2000:])
            # Every job of the run loaded the environment through hpc-activate.sh, not a bare python3.
            jobs = ssh_as_user(slurm_cluster, f"grep -l dagster-hpc-test-{tag} {base_dir}/jobs/*/*/job.sh").split()
            bare = ssh_as_user(slurm_cluster, f"grep -L hpc-activate.sh {' '.join(jobs)}", check=False).split()
            assert len(jobs) >= 5 and not bare, (site, jobs, bare)
        print(f"three sites, every example asset, launched side by side: {elapsed:.0f}s")
    finally:
        shutil.rmtree(corpus, ignore_errors=True)
        ssh_as_user(slurm_cluster, f"bash -lc 'rm -rf $DATA/dagster-hpc-test-{tag} $WORK/dagster-hpc-test-{tag}'", check=False)


def test_compute_nodes_are_offline_while_the_login_node_is_not(slurm_cluster):
    """As on Leonardo: a job that tries to download fails; the login node, which builds the venvs, reaches PyPI."""
    probe = ("import urllib.request as u\ntry:\n    u.urlopen('https://pypi.org/simple/', timeout=10); print('ONLINE')\n"
             "except OSError as e:\n    print('OFFLINE', e)")
    command = "module load python/3.11.2 && python3 -c " + shlex.quote(probe)
    login = ssh_as_user(slurm_cluster, "bash -lc " + shlex.quote(command))
    assert "ONLINE" in login, login
    job = ssh_as_user(slurm_cluster, "cd /tmp && srun -A hpc-test -t 1 --mem=200M bash -lc " + shlex.quote(command))
    assert "OFFLINE" in job and "ONLINE" not in job, job
