"""What a run of a workload records on its materialization: one set of keys for local and Slurm runs.

The same asset run locally and on a cluster can then be compared key by key in the UI. A figure
that cannot be known for a run is not left out: its value is the text "n/a: <why>" (a local run has
no Slurm job id; a Slurm job without an accounting record has no CPU efficiency). The job script
that ran is recorded as a Markdown ```bash block. It holds no secret: forward_env values travel in
a separate file (Slurm) or the process environment (local), never in the script.
"""

from __future__ import annotations

import re
import resource
import socket
from collections.abc import Mapping

import dagster as dg

from components.core.metrics import not_available

# Every run records each of these keys (workloads add their own besides).
RUN_KEYS = (
    "cluster", "launcher", "workload", "job_script", "job_dir", "exit_code", "elapsed_s",
    "cpu_efficiency", "max_rss_mb", "nodes", "gpus", "attempt",
    "slurm_job_id", "slurm_state", "slurm_exit_code", "slurm_restarts", "outcome_evidence",
    "queue_wait_s", "node_hours", "alloc_tres",
)
NOT_SLURM = "local run, no Slurm job"
NO_ACCOUNTING = "Slurm's accounting (sacct) has no record of this job"
NOT_ACCOUNTED = "not in Slurm's accounting record of this job"


def script_block(script: str) -> str:
    """The job script as a Markdown bash code block; the fence is longer than any backtick run inside."""
    longest = max((len(run) for run in re.findall(r"`+", script)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}bash\n{script.rstrip()}\n{fence}"


def plan_values(cluster: str, launcher: str, workload: str, script: str) -> dict[str, object]:
    """The keys that come from the plan: where, what, and the exact script."""
    return {"cluster": cluster, "launcher": launcher, "workload": workload, "job_script": script_block(script)}


def local_values(elapsed_s: float, usage: resource.struct_rusage | None, cpus: int, job_dir: str) -> dict[str, object]:
    """The measured keys of a local run.

    elapsed_s: wall seconds of the job script. usage: rusage of the script's process tree (os.wait4),
    None when it could not be read. cpus: the CPUs the asset requests (cpus_per_task x tasks), the
    same denominator sacct uses, so local and Slurm efficiencies compare.
    """
    values: dict[str, object] = {
        "elapsed_s": round(elapsed_s, 3), "exit_code": 0, "nodes": socket.gethostname(), "attempt": 1, "job_dir": job_dir,
    }
    if usage is None:
        values["cpu_efficiency"] = values["max_rss_mb"] = not_available("the job's resource usage could not be read")
        return values
    cpu_s = usage.ru_utime + usage.ru_stime
    values["cpu_efficiency"] = (round(cpu_s / (elapsed_s * cpus), 4) if elapsed_s > 0 and cpus > 0
                                else not_available("the job ran for no measurable time"))
    values["max_rss_mb"] = round(usage.ru_maxrss / 1024, 1)  # Linux reports kilobytes
    return values


def run_metadata(values: Mapping[str, object], missing: str) -> dict[str, dg.MetadataValue]:
    """`values` as Dagster metadata, every RUN_KEYS key present: those absent become 'n/a: <missing>'.

    Keys outside RUN_KEYS are kept (stderr_tail of a failure, contact_lost_s); None values count as absent.
    """
    out: dict[str, dg.MetadataValue] = {}
    for key in (*RUN_KEYS, *(k for k in values if k not in RUN_KEYS)):
        value = values.get(key)
        if value is None:
            if key not in RUN_KEYS:
                continue
            value = not_available(missing)
        out[key] = _value(key, value)
    return out


def _value(key: str, value: object) -> dg.MetadataValue:
    if key == "job_script":
        return dg.MetadataValue.md(str(value))
    if isinstance(value, bool):
        return dg.MetadataValue.bool(value)
    if isinstance(value, int):
        return dg.MetadataValue.int(value)
    if isinstance(value, float):
        return dg.MetadataValue.float(value)
    return dg.MetadataValue.text(str(value))
