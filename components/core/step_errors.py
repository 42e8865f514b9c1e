"""The failures a Slurm step ends with, worded for the person who must act: what happened, to
which job, where its files are, and what re-executing does. Pure: no connection here."""

from __future__ import annotations

import dagster as dg

from components.core.contact import OutageTooLong
from components.core.job_record import RemotePolicy, SubmittedJob
from components.core.outcome import Outcome
from components.core.run_metadata import NO_ACCOUNTING, NOT_ACCOUNTED, run_metadata
from components.core.tail import StderrTail
from components.core.units import format_time


def job_failure(job: SubmittedJob, job_dir: str, cluster: str, outcome: Outcome, stderr_tail: StderrTail,
                metadata: dict) -> dg.Failure:
    """The job (or job step) ended in a failed state: its state, exit, cause and the last lines of its stderr."""
    stderr = stderr_tail.text()
    return dg.Failure(
        description=(
            f"{job.describe()} on {cluster} ended {outcome.state} ({outcome.exit_text()}): {outcome.cause()}\n"
            f"job dir: {job_dir}\n--- last {len(stderr_tail)} lines of stderr ---\n{stderr}"
        ),
        metadata=run_metadata({**metadata, "stderr_tail": stderr}, NOT_ACCOUNTED if "node_hours" in metadata else NO_ACCOUNTING),
    )


def gave_up(exc: OutageTooLong, job: SubmittedJob | None, job_dir: str, cluster: str, host: str,
            policy: RemotePolicy) -> dg.Failure:
    """Contact was lost longer than submission.outage_tolerance: nothing was cancelled; re-executing re-attaches."""
    if job is None:
        return dg.Failure(f"{exc}; whether sbatch queued the job is unknown. Re-executing this step asks Slurm for a job "
                          f"in {job_dir} and re-attaches to it if there is one, else submits.")
    stop = f"scancel {job.job_id}" if not job.step else f"scancel {job.job_id} (the run's whole allocation)"
    return dg.Failure(
        description=(
            f"gave up following {job.describe()} on {cluster}: {exc}. The job may still be running; "
            f"nothing was cancelled. Re-executing this step re-attaches to it and harvests its results, whatever its state; "
            f"to stop it instead, run `{stop}` on {host}. Raise submission.outage_tolerance "
            f"(now {format_time(policy.outage_tolerance_s)}) to wait longer.\njob dir: {job_dir}"
        ),
        metadata=run_metadata({"slurm_job_id": job.job_id, "cluster": cluster, "job_dir": job_dir,
                               "contact_lost_s": round(exc.lost_s, 1)}, "contact with the cluster was lost"),
    )
