"""Slurm client over a Transport: submit, observe, cancel, account. No Dagster here."""

from __future__ import annotations

import re
import shlex
import time
from dataclasses import dataclass

from components.core.ssh import RemoteCommandError, Transport

ACTIVE = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED"}
SUCCESS = {"COMPLETED"}
# Every other terminal state is a failure; an unknown one is never taken for success.
FAILURE_CAUSES = {
    "FAILED": "the job script exited non-zero",
    "TIMEOUT": "the job ran past its time limit",
    "OUT_OF_MEMORY": "the job exceeded its memory limit",
    "NODE_FAIL": "a node of the job failed",
    "PREEMPTED": "the job was preempted by a higher-priority job",
    "CANCELLED": "the job was cancelled (scancel or an administrator)",
    "BOOT_FAIL": "a node failed to boot",
    "DEADLINE": "the job missed its deadline",
}


@dataclass(frozen=True)
class QueueState:
    state: str
    reason: str
    nodes: str


@dataclass(frozen=True)
class Accounting:
    """One job's sacct record, with the batch step's peak memory."""

    job_id: str
    state: str
    exit_code: int
    signal: int
    fields: dict[str, str]
    max_rss: str


def parse_job_id(sbatch_output: str) -> str:
    # --parsable prints "<id>" or "<id>;<cluster>"
    line = sbatch_output.strip().splitlines()[-1] if sbatch_output.strip() else ""
    job_id = line.split(";", 1)[0]
    if not re.fullmatch(r"\d+(_\d+)?", job_id):
        raise ValueError(f"sbatch printed no job id: {sbatch_output!r}")
    return job_id


class SlurmClient:
    def __init__(self, transport: Transport):
        self.transport = transport

    def submit(self, job_dir: str, script: str = "job.sh", test_only: bool = False) -> str:
        flags = "--test-only " if test_only else "--parsable "
        try:
            result = self.transport.run(f"cd {shlex.quote(job_dir)} && sbatch {flags}{shlex.quote(script)}")
        except RemoteCommandError as exc:
            raise SubmissionError(exc.result.stderr.strip() or exc.result.stdout.strip()) from None
        if test_only:
            return result.stderr.strip() or result.stdout.strip()
        return parse_job_id(result.stdout)

    def queue_state(self, job_id: str) -> QueueState | None:
        """The job's state while Slurm still lists it in squeue; None once it has left."""
        result = self.transport.run(f"squeue -h -j {int(job_id.split('_')[0])} -o '%T|%r|%N' 2>/dev/null", check=False)
        line = result.stdout.strip().splitlines()
        if result.exit_code != 0 or not line:
            return None
        state, reason, nodes = (line[0].split("|") + ["", ""])[:3]
        return QueueState(state.strip(), reason.strip(), nodes.strip())

    SACCT_FIELDS = ("JobID", "State", "ExitCode", "Elapsed", "ElapsedRaw", "Submit", "Start", "End", "NNodes", "NCPUS", "TotalCPU", "AllocTRES", "NodeList", "MaxRSS", "Timelimit")

    def accounting(self, job_id: str, attempts: int = 10, delay_s: float = 0.5) -> Accounting | None:
        """sacct's record for the job; records arrive a second or two after the job ends, so retry."""
        fmt = ",".join(self.SACCT_FIELDS)
        for attempt in range(attempts):
            result = self.transport.run(f"sacct -j {int(job_id)} -n -P --format={fmt} 2>/dev/null", check=False)
            record = self._parse_sacct(job_id, result.stdout) if result.exit_code == 0 else None
            if record is not None and record.state not in ACTIVE:
                return record
            time.sleep(delay_s * (1 + attempt // 3))
        return None

    def _parse_sacct(self, job_id: str, text: str) -> Accounting | None:
        rows = [dict(zip(self.SACCT_FIELDS, line.split("|"))) for line in text.strip().splitlines() if line.count("|") == len(self.SACCT_FIELDS) - 1]
        main = next((r for r in rows if r["JobID"] == str(job_id)), None)
        if main is None:
            return None
        state = main["State"].split()[0]  # "CANCELLED by 1000" -> CANCELLED
        code, _, sig = main["ExitCode"].partition(":")
        max_rss = max((r["MaxRSS"] for r in rows if r["MaxRSS"]), key=_rss_bytes, default="")
        return Accounting(job_id, state, int(code or 0), int(sig or 0), main, max_rss)

    def cancel(self, job_id: str) -> None:
        self.transport.run(f"scancel {int(job_id)}", check=False)


def _rss_bytes(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)([KMGT]?)", text.strip())
    if not match:
        return 0.0
    return float(match.group(1)) * {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}[match.group(2)]


class SubmissionError(RuntimeError):
    """sbatch refused the job: the message is Slurm's own, e.g. an invalid account or QoS."""
