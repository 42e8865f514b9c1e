"""Scripts rendered from the real site profiles, pointed at the test cluster, are accepted by a real
slurmctld (`sbatch --test-only`) and really run: partitions, QoS, accounts and GRES as the sites name them."""

from __future__ import annotations

import shlex
import time
from pathlib import PurePosixPath

import pytest

from components.core.profiles import load_profile
from components.core.render import JobSpec, plan_job, render_script
from components.core.resources import JobResources
from components.core.scheduler import SlurmClient
from components.core.ssh import target_for, transport_for
from tests.conftest import copy_project

pytestmark = pytest.mark.integration

JOBS = {
    "cpu": JobResources(cpus_per_task=2, mem="2G", time="00:05:00"),
    "gpu": JobResources(gpus=2, cpus_per_task=1, mem="2G", time="00:05:00"),
    "multinode": JobResources(nodes=2, ntasks=4, cpus_per_task=1, mem="1G", time="00:05:00"),
    "debug": JobResources(partition_class="debug", time="00:05:00"),
}
ACCOUNTS = {"vsc5": ("VSC5_ACCOUNT", "p71234"), "leonardo": ("LEONARDO_ACCOUNT", "EUHPC_D20_063"), "musica": ("MUSICA_ACCOUNT", "p72000")}


@pytest.fixture
def site_project(tmp_path, slurm_cluster, monkeypatch):
    monkeypatch.setenv("HPC_TEST_CLUSTER_DIR", str(slurm_cluster))
    project = copy_project(tmp_path)
    # A bash workload: these scripts test the sites' directives; the job's Python is test_site_profiles'.
    (project / "workloads" / "hello.sh").write_text('echo rank "${SLURM_PROCID:-}" "$(hostname)"\n')
    for site, (var, account) in ACCOUNTS.items():
        monkeypatch.setenv(var, account)
        # Same site profile, reached through the test endpoint; its module lines run for real.
        (project / "clusters" / f"{site}-test.yaml").write_text(
            f"extends: {site}\n"
            "ssh: {host: 127.0.0.1, port: 2222, user: slurmuser, auth: key, "
            "key_file: $HPC_TEST_CLUSTER_DIR/ssh/id_ed25519, known_hosts: $HPC_TEST_CLUSTER_DIR/ssh/known_hosts, certificate_file: null}\n"
            "environment: {strategy: preinstalled}\n"
            "paths: {base_dir: $HOME/dagster-hpc-sites}\n"
        )
    return project


@pytest.mark.parametrize("job", sorted(JOBS))
@pytest.mark.parametrize("site", sorted(ACCOUNTS))
def test_site_script_is_accepted_and_runs(site_project, site, job):
    profile = load_profile(f"{site}-test", site_project / "clusters")
    spec = JobSpec(name=f"{site}-{job}", assets=(f"{site}/{job}",), workload=PurePosixPath("hello.sh"), launcher="bash",
                   resources=JOBS[job])
    plan = plan_job(profile, spec, strict=True)
    script = render_script(plan, site_project / "clusters")
    transport = transport_for(target_for(profile))
    client = SlurmClient(transport)
    job_dir = f"dagster-hpc-sites/{site}-{job}-{time.time_ns()}"
    transport.run(f"mkdir -p -m 700 {job_dir}/workloads")
    transport.put(script.encode(), f"{job_dir}/job.sh", mode=0o700)
    transport.put((site_project / "workloads" / "hello.sh").read_bytes(), f"{job_dir}/workloads/hello.sh")
    verdict = client.submit(job_dir, test_only=True)
    assert "to start at" in verdict, verdict
    job_id = client.submit(job_dir)
    deadline = time.monotonic() + 120
    while (state := client.queue_state(job_id)) and state.state in ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING"):
        assert time.monotonic() < deadline, f"{site}/{job} still {state}"
        time.sleep(0.3)
    record = client.accounting(job_id)
    assert record is not None and record.state == "COMPLETED", (record, transport.run(f"cat {job_dir}/slurm-{job_id}.err", check=False).stdout)
    out = transport.run(f"cat {shlex.quote(job_dir)}/slurm-{job_id}.out").stdout
    assert out.count("rank") == JOBS[job].total_tasks
    if job == "gpu":
        assert "gres/gpu=2" in record.fields["AllocTRES"]
