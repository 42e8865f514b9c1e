from __future__ import annotations

import resource

import dagster as dg

from components.core.metrics import SUB_SECOND, job_metrics
from components.core.outcome import decide
from components.core.run_metadata import (
    NO_ACCOUNTING, NOT_ACCOUNTED, NOT_SLURM, RUN_KEYS, local_values, plan_values, run_metadata, script_block,
)
from components.core.scheduler import SlurmClient

SCRIPT = "#!/bin/bash\n#SBATCH --job-name=raw__numbers\nset -euo pipefail\npython workloads/draw_numbers.py\n"
SACCT = ("17|COMPLETED|0:0|00:00:04|4|2026-11-21T10:00:00|2026-11-21T10:00:03|2026-11-21T10:00:07|1|2|00:03.500|"
         "billing=2,cpu=2,mem=100M,node=1|localhost||00:05:00|job\n")


def _usage(user_s: float, system_s: float, maxrss_kb: int) -> resource.struct_rusage:
    fields = [0.0, 0.0, maxrss_kb] + [0] * 13
    fields[0], fields[1] = user_s, system_s
    return resource.struct_rusage(fields)


def _local() -> dict[str, dg.MetadataValue]:
    values = plan_values("local", "python", "workloads/draw_numbers.py", SCRIPT)
    return run_metadata({**values, **local_values(2.0, _usage(1.5, 0.5, 204800), 2, "/tmp/job")}, NOT_SLURM)


def _slurm(with_accounting: bool) -> dict[str, dg.MetadataValue]:
    record = SlurmClient(transport=None)._parse_sacct("17", SACCT) if with_accounting else None
    outcome = decide(None, record, 0)
    values = job_metrics(record) if record else {"slurm_job_id": "17"}
    values |= outcome.metadata() | {"job_dir": "/scratch/jobs/x", "attempt": 1, "slurm_restarts": 0}
    values |= plan_values("docker", "python", "workloads/draw_numbers.py", SCRIPT)
    return run_metadata(values, NOT_ACCOUNTED if record else NO_ACCOUNTING)


def test_local_and_slurm_runs_record_the_same_keys():
    assert list(_local()) == list(_slurm(True)) == list(_slurm(False)) == list(RUN_KEYS)


def test_local_cpu_efficiency_is_cpu_time_over_wall_times_cpus():
    meta = _local()
    assert meta["cpu_efficiency"].value == round((1.5 + 0.5) / (2.0 * 2), 4)
    assert meta["max_rss_mb"].value == 200.0
    assert meta["slurm_job_id"].value == f"n/a: {NOT_SLURM}"


def test_what_cannot_be_known_says_why_instead_of_missing():
    meta = _slurm(False)
    assert meta["cpu_efficiency"].value == f"n/a: {NO_ACCOUNTING}"
    assert meta["exit_code"].value == 0 and meta["slurm_job_id"].value == "17"
    unread = local_values(2.0, None, 2, "/tmp/job")
    assert unread["cpu_efficiency"] == "n/a: the job's resource usage could not be read"
    assert local_values(0.0, _usage(0, 0, 1), 1, "/tmp/job")["cpu_efficiency"].startswith("n/a: ")


def test_the_job_script_is_a_bash_code_block():
    meta = _local()["job_script"]
    assert isinstance(meta, dg.MarkdownMetadataValue)
    assert meta.value == f"```bash\n{SCRIPT.rstrip()}\n```"
    # A script that itself holds a fence cannot close the block early.
    assert script_block("echo '```'\n").startswith("````bash\n")


def test_a_sub_second_slurm_job_says_why_it_has_no_efficiency():
    record = SlurmClient(transport=None)._parse_sacct("17", SACCT.replace("|00:00:04|4|", "|00:00:00|0|"))
    assert job_metrics(record)["cpu_efficiency"] == f"n/a: {SUB_SECOND}"
