"""What the evidence about a Slurm job says: how it ended, and whether a pending job can ever start.

Pure functions over what the scheduler and the job directory told us; no connection here. The
order of trust: sacct's final record, then squeue's terminal state, then the job's own exit-code
file. Missing evidence is never read as success, and an exit code is never made up.
"""

from __future__ import annotations

import re
import signal as _signal
from dataclasses import dataclass

from components.core.scheduler import ACTIVE, FAILURE_CAUSES, Accounting, QueueState


@dataclass(frozen=True)
class Outcome:
    """How a job ended.

    state: a Slurm job state, or UNKNOWN when neither Slurm nor the job directory says.
    exit_code: the job script's exit status (0-255), None when it never got to exit.
    signal: the signal that killed the workload or the script, None when none did.
    evidence: where the state came from (sacct, squeue, exit-code file, none).
    """

    state: str
    exit_code: int | None
    signal: int | None
    evidence: str

    @property
    def succeeded(self) -> bool:
        return self.state == "COMPLETED" and self.exit_code == 0

    def exit_text(self) -> str:
        """'exit code 3', 'killed by signal 9 (SIGKILL), exit code 137', 'no exit code: ...'."""
        if self.signal is not None:
            text = f"killed by signal {self.signal} ({signal_name(self.signal)})"
            return text + (f", exit code {self.exit_code}" if self.exit_code is not None else "")
        if self.exit_code is not None:
            return f"exit code {self.exit_code}"
        return "no exit code: the job script was stopped before it could record one"

    def cause(self) -> str:
        if self.state == "UNKNOWN":
            return ("Slurm no longer knows the job, accounting (sacct) has no record of it and the job left no "
                    "exit-code file, so it was stopped before it finished (killed, timed out or its node failed)")
        return FAILURE_CAUSES.get(self.state, "Slurm reported a state this tool does not treat as success")

    def metadata(self) -> dict[str, object]:
        out: dict[str, object] = {"slurm_state": self.state, "outcome_evidence": self.evidence}
        if self.exit_code is not None:
            out["exit_code"] = self.exit_code
        if self.signal is not None:
            out["signal"] = self.signal
        return out


def signal_name(number: int) -> str:
    try:
        return _signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _real_signal(number: int) -> int | None:
    # Slurm writes 125 for a job it ended itself (out of memory); that is no signal anybody sent.
    return number if 0 < number < 65 else None


def decide(queue: QueueState | None, record: Accounting | None, marker: int | None) -> Outcome:
    """Combine squeue's last answer, sacct's record and the exit-code file into one Outcome.

    queue: the last squeue answer (None when the controller no longer knows the job).
    record: sacct's final record, None without accounting.
    marker: the status the job script wrote to .hpc-exit-code, None when it wrote none.
    """
    if record is not None and record.state not in ACTIVE:
        state, evidence = record.state, "sacct"
    elif queue is not None and queue.state not in ACTIVE:
        state, evidence = queue.state, "squeue"
    elif marker is not None:
        # No scheduler evidence left, but the script itself recorded how it ended.
        state, evidence = ("COMPLETED" if marker == 0 else "FAILED"), "exit-code file"
    else:
        state, evidence = "UNKNOWN", "none"

    exit_code: int | None = None
    sig: int | None = None
    if marker is not None:
        exit_code = marker
        # A shell reports a child killed by signal N as 128+N.
        sig = _real_signal(marker - 128) if marker > 128 else None
    elif record is not None:
        sig = _real_signal(record.signal) or _real_signal(record.batch_exit[1])
        if sig is not None:
            exit_code = 128 + sig
        elif record.exit_code or record.batch_exit[0]:
            exit_code = record.exit_code or record.batch_exit[0]
        elif state == "COMPLETED":
            exit_code = 0
    if state == "COMPLETED" and exit_code is None:
        exit_code = 0  # squeue's COMPLETED means exit 0; nothing contradicts it
    return Outcome(state, exit_code, sig, evidence)


# --- pending reasons ---------------------------------------------------------------------------
# Source: Slurm's job reason codes, https://slurm.schedmd.com/job_reason_codes.html (and the
# "JOB REASON CODES" section of squeue(1)). A permanent reason does not clear by waiting: the
# job is cancelled at once. A suspicious one clears only when someone acts: the log says who.

PERMANENT_REASONS: dict[str, tuple[str, str]] = {
    "DependencyNeverSatisfied": ("a job it depends on failed or was cancelled, so it can never start",
                                 "fix or re-run the job it depends on, then materialize again"),
    "JobHeldAdmin": ("an administrator holds it (Slurm also holds a job whose launch failed)",
                     "ask the site's support why the job was held; materialize again once resolved"),
    "BadConstraints": ("no node can satisfy its constraints", "change --constraint or the resources"),
    "InvalidAccount": ("its account is not valid for this user", "set the account (profile account_env) to one of `sacctmgr show assoc user=$USER`"),
    "InvalidQOS": ("its QoS is not valid for this user or account", "choose a QoS your association allows"),
    "AccountNotAllowed": ("its account may not use this partition", "choose another partition_class or account"),
    "QOSNotAllowed": ("its QoS may not use this partition", "choose the QoS the profile pairs with this partition"),
    "PartitionTimeLimit": ("its time limit exceeds the partition's maximum", "lower resources.time"),
    "PartitionNodeLimit": ("it asks for more nodes than the partition allows", "lower resources.nodes"),
}
# Per-job limits of a QoS or association: the job itself is too large for them.
_PER_JOB_LIMIT = re.compile(r"^(QOS|Assoc)Max\w*Per(Job|Node)\w*$")

SUSPICIOUS_REASONS: dict[str, str] = {
    "JobHeldUser": "a user holds it: `scontrol release {job_id}` lets it start",
    "ReqNodeNotAvail": "the nodes it needs are down, drained or reserved (often a maintenance reservation)",
    "PartitionDown": "its partition is down; it starts when the site brings it back",
    "PartitionInactive": "its partition is inactive; it starts when the site activates it",
    "NodeDown": "a node it needs is down",
}


def pending_verdict(reason: str) -> tuple[str, str, str] | None:
    """('permanent' | 'suspicious', what it means, fix) for a pending reason; None for normal waits."""
    head = reason.split(",")[0].strip()
    if head in PERMANENT_REASONS:
        meaning, fix = PERMANENT_REASONS[head]
        return "permanent", meaning, fix
    if _PER_JOB_LIMIT.match(head):
        return "permanent", "it exceeds a per-job limit of its QoS or association", "lower the resources or choose another QoS"
    if head in SUSPICIOUS_REASONS:
        return "suspicious", SUSPICIOUS_REASONS[head], ""
    return None
