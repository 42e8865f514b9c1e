"""Slurm client over a Transport: submit, observe, cancel, account. No Dagster here.

Every query tells three answers apart: the job's state, "Slurm does not know this job", and
"no news" (the controller or the database did not answer). Only the first two are facts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

import re
import shlex
import time
from dataclasses import dataclass

from components.core.ssh_target import RemoteCommandError

if TYPE_CHECKING:
    from components.core.ssh import Transport

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
    """squeue's view of one job: state, pending reason, node list, times requeued."""

    state: str
    reason: str
    nodes: str
    restarts: int = 0


# sbatch/squeue errors that say the controller did not answer, not that the request is wrong.
TRANSIENT = ("Unable to contact slurm controller", "Socket timed out", "Slurm temporarily unable",
             "Zero Bytes were transmitted", "Transport endpoint is not connected", "Connection refused")


class SchedulerUnavailable(RuntimeError):
    """squeue or sacct failed (controller restarting, "Socket timed out", database down): no news."""


@dataclass(frozen=True)
class Accounting:
    """One job's sacct record, with the batch step's peak memory."""

    job_id: str
    state: str
    exit_code: int
    signal: int
    fields: dict[str, str]
    max_rss: str
    # The batch step's "code:signal": a job killed by a signal shows it there, not on the job.
    batch_exit: tuple[int, int] = (0, 0)


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
        """sbatch the script in job_dir; the job id. Never retried by the transport: a reply lost
        in a dropped connection may still mean a queued job (see `job_in_dir`).

        Raises SubmissionError when sbatch refuses; ContactLost or SchedulerUnavailable when no
        answer came from the login node or the controller.
        """
        flags = "--test-only " if test_only else "--parsable "
        try:
            result = self.transport.run(f"cd {shlex.quote(job_dir)} && sbatch {flags}{shlex.quote(script)}", idempotent=False)
        except RemoteCommandError as exc:
            text = exc.result.stderr.strip() or exc.result.stdout.strip()
            if any(marker in text for marker in TRANSIENT):
                # The controller did not answer: the job may or may not be queued.
                raise SchedulerUnavailable(_first_line(text)) from None
            raise SubmissionError(text) from None
        if test_only:
            return result.stderr.strip() or result.stdout.strip()
        return parse_job_id(result.stdout)

    def job_in_dir(self, job_dir: str) -> str | None:
        """The id of our job submitted from job_dir, if Slurm knows one (after a lost sbatch reply).

        Raises SchedulerUnavailable when squeue does not answer.
        """
        result = self.transport.run("squeue --me -h -t all -o '%i|%Z'", check=False, timeout=60)
        if result.exit_code != 0:
            raise SchedulerUnavailable(_first_line(result.stderr) or f"squeue exited {result.exit_code}")
        for line in result.stdout.splitlines():
            job_id, _, work_dir = line.partition("|")
            if work_dir.strip() == job_dir:
                return job_id.strip()
        return None

    # -O fields with "|" as separator; RestartCnt counts requeues (the job id stays the same).
    SQUEUE_FORMAT = "State:|,Reason:|,NodeList:|,RestartCnt:|"

    def queue_state(self, job_id: str) -> QueueState | None:
        """The job as the controller sees it, in any state (finished jobs stay MinJobAge, 300 s by default).

        None when the controller does not know the job (finished long ago). Raises SchedulerUnavailable
        when squeue fails for any other reason: a busy or restarting controller is no news.
        """
        result = self.transport.run(f"squeue -h -t all -j {_base_id(job_id)} -O '{self.SQUEUE_FORMAT}'", check=False, timeout=60)
        lines = result.stdout.strip().splitlines()
        if result.exit_code != 0:
            if "Invalid job id" in result.stderr:
                return None
            raise SchedulerUnavailable(_first_line(result.stderr) or f"squeue exited {result.exit_code}")
        if not lines:
            return None
        state, reason, nodes, restarts = ([part.strip() for part in lines[0].split("|")] + ["", "", "", ""])[:4]
        return QueueState(state, reason, nodes, int(restarts) if restarts.isdigit() else 0)

    def queue_states(self, job_ids: Iterable[str]) -> dict[str, QueueState]:
        """Many jobs with one squeue: {job id as squeue prints it: QueueState}; ids it does not know are absent.

        Only this user's jobs are seen (another user's id is absent). Seen on Slurm 22.05: several ids,
        some or all unknown, exit 0 and list the known ones (squeue loads the user's jobs and filters);
        one unknown id alone exits 1 with "Invalid job id specified".
        Raises SchedulerUnavailable when the controller did not answer (exit 1, "Unable to contact
        slurm controller"), ValueError for an id that is not a Slurm job id.
        """
        ids = sorted({_base_id(job_id) for job_id in job_ids})
        if not ids:
            return {}
        # --me: with several ids squeue asks for the user's jobs (REQUEST_JOB_USER_INFO, filtered by the
        # controller), not for every job on the cluster (REQUEST_JOB_INFO); steps follow only their own.
        result = self.transport.run(f"squeue --me -h -t all -j {','.join(map(str, ids))} -O 'JobID:|,{self.SQUEUE_FORMAT}'",
                                    check=False, timeout=60)
        if result.exit_code != 0 and "Invalid job id" not in result.stderr:
            raise SchedulerUnavailable(_first_line(result.stderr) or f"squeue exited {result.exit_code}")
        return parse_queue_states(result.stdout)

    SACCT_FIELDS = ("JobID", "State", "ExitCode", "Elapsed", "ElapsedRaw", "Submit", "Start", "End", "NNodes", "NCPUS", "TotalCPU", "AllocTRES", "NodeList", "MaxRSS", "Timelimit", "JobName")

    def accounting(self, job_id: str, attempts: int = 10, delay_s: float = 0.5) -> Accounting | None:
        """sacct's final record for the job; records arrive a second or two after the job ends, so retry.

        None when there is no final record after `attempts` tries (about 11 s): no accounting
        (slurmdbd down or not configured) is not evidence of anything.
        """
        fmt = ",".join(self.SACCT_FIELDS)
        for attempt in range(attempts):
            result = self.transport.run(f"sacct -j {_base_id(job_id)} -n -P --format={fmt} 2>/dev/null", check=False, timeout=60)
            record = self._parse_sacct(job_id, result.stdout) if result.exit_code == 0 else None
            if record is not None and record.state not in ACTIVE:
                return record
            time.sleep(delay_s * (1 + attempt // 3))
        return None

    def accountings(self, job_ids: Iterable[str]) -> dict[str, Accounting]:
        """Many jobs with one sacct, no retry: {job id as asked: its record}, final or not (see ACTIVE).

        A job without a record yet (it ended a second ago, or is unknown) is absent. Raises
        SchedulerUnavailable when sacct fails (slurmdbd down), ValueError for a malformed id.
        """
        asked = [str(job_id) for job_id in job_ids]
        return self.parse_accountings(asked, self.sacct_text(asked)) if asked else {}

    def sacct_text(self, job_ids: Iterable[str]) -> str:
        """`sacct -n -P` output of SACCT_FIELDS for the jobs (and their steps), one call.

        Raises SchedulerUnavailable when sacct fails, ValueError for a malformed id.
        """
        ids = ",".join(map(str, sorted({_base_id(job_id) for job_id in job_ids})))
        result = self.transport.run(f"sacct -j {ids} -n -P --format={','.join(self.SACCT_FIELDS)}", check=False, timeout=60)
        if result.exit_code != 0:
            raise SchedulerUnavailable(_first_line(result.stderr) or f"sacct exited {result.exit_code}")
        return result.stdout

    def parse_accountings(self, job_ids: Iterable[str], text: str) -> dict[str, Accounting]:
        """Records of the given jobs in `sacct -n -P` output of SACCT_FIELDS; jobs without one are absent."""
        records = {str(job_id): self._parse_sacct(str(job_id), text) for job_id in job_ids}
        return {job_id: record for job_id, record in records.items() if record is not None}

    def _parse_sacct(self, job_id: str, text: str) -> Accounting | None:
        rows = [dict(zip(self.SACCT_FIELDS, line.split("|"))) for line in text.strip().splitlines() if line.count("|") == len(self.SACCT_FIELDS) - 1]
        main = next((r for r in rows if r["JobID"] == str(job_id)), None)
        if main is None:
            return None
        state = main["State"].split()[0]  # "CANCELLED by 1000" -> CANCELLED
        max_rss = max((r["MaxRSS"] for r in rows if r["MaxRSS"]), key=_rss_bytes, default="")
        batch = next((r for r in rows if r["JobID"] == f"{job_id}.batch"), None)
        batch_exit = _exit_pair(batch["ExitCode"]) if batch else (0, 0)
        return Accounting(job_id, state, *_exit_pair(main["ExitCode"]), main, max_rss, batch_exit)

    def cancel(self, job_id: str) -> bool:
        """scancel the job; True when Slurm took it or the job had already ended.

        Raises ContactLost when the login node cannot be reached.
        """
        result = self.transport.run(f"scancel {_base_id(job_id)}", check=False, timeout=60)
        return result.exit_code == 0 or "already completed" in result.stderr or "Invalid job id" in result.stderr


def parse_queue_states(text: str) -> dict[str, QueueState]:
    """`squeue -O 'JobID:|,State:|,Reason:|,NodeList:|,RestartCnt:|'` lines: {job id: QueueState}.

    Keys are as squeue prints them: "123", an array task "123_4", a pending array's "123_[5-9]".
    Lines that do not start with a job id (warnings) are skipped.
    """
    states = {}
    for line in text.splitlines():
        job_id, state, reason, nodes, restarts = ([part.strip() for part in line.split("|")] + [""] * 5)[:5]
        if re.fullmatch(r"\d+(_(\d+|\[[\d,\-%]+\]))?(\+\d+)?", job_id) and state:
            states[job_id] = QueueState(state, reason, nodes, int(restarts) if restarts.isdigit() else 0)
    return states


def _base_id(job_id: str) -> int:
    """The numeric id squeue/sacct/scancel take; refuses anything else, so nothing odd reaches a shell."""
    return int(str(job_id).split("_")[0])


def _exit_pair(text: str) -> tuple[int, int]:
    code, _, sig = (text or "").partition(":")
    return (int(code) if code.isdigit() else 0, int(sig) if sig.isdigit() else 0)


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def _rss_bytes(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)([KMGT]?)", text.strip())
    if not match:
        return 0.0
    return float(match.group(1)) * {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}[match.group(2)]


class SubmissionError(RuntimeError):
    """sbatch refused the job: the message is Slurm's own, e.g. an invalid account or QoS."""
