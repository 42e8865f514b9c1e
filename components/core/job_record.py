"""What a step records about its Slurm job and ships with it: the run tags that let a later step
re-attach (`SubmittedJob`), the submission policy of a component (`RemotePolicy`), and the tarball
of workloads uploaded into the job directory (`pack`). No connection here."""

from __future__ import annotations

import io
import tarfile
from dataclasses import dataclass
from pathlib import Path

from components.core.render import RUNTIME_DIR, RUNTIME_PACKAGE
from components.core.resources import JobResources

TAG_PREFIX = "hpc/job/"
OUTCOME_TAG_PREFIX = "hpc/outcome/"
UNCONFIRMED = "unconfirmed"  # the job id of a submission whose sbatch answer has not arrived
# Seconds between squeue questions while following a job: quick right after submission, slower later.
POLL_SCHEDULE_S = (0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0)


def poll_interval(polls: int, max_s: float) -> float:
    """The pause (seconds) before question number `polls` + 1, at most `max_s` (submission.max_poll_interval_s)."""
    return min(POLL_SCHEDULE_S[min(polls, len(POLL_SCHEDULE_S) - 1)], max_s)


@dataclass(frozen=True)
class RemotePolicy:
    """How a step follows its job (seconds). allocation: "job" (a job per step) or "run" (the
    run's allocation, see components.core.allocation); allocation_resources: its explicit shape."""

    queue_timeout_s: int = 7 * 86400
    max_poll_interval_s: float = 10.0
    retry_states: tuple[str, ...] = ()
    max_attempts: int = 1
    outage_tolerance_s: int = 1800
    allocation: str = "job"
    allocation_idle_timeout_s: int = 120
    allocation_resources: JobResources | None = None


@dataclass(frozen=True)
class SubmittedJob:
    """A step's Slurm job as its run tag records it. In a run-scoped allocation, job_id is the
    allocation's, `step` the step's name there and `alloc_dir` the allocation's directory."""

    cluster: str
    job_id: str
    job_dir: str
    step: str = ""
    alloc_dir: str = ""

    def tag(self) -> str:
        plain = f"{self.cluster}|{self.job_id}|{self.job_dir}"
        return f"{plain}|{self.step}|{self.alloc_dir}" if self.step else plain

    @staticmethod
    def from_tag(value: str) -> SubmittedJob | None:
        parts = value.split("|")
        return SubmittedJob(*parts) if len(parts) in (3, 5) else None

    def describe(self) -> str:
        """"Slurm job 123", or "job step <name> of allocation 123"."""
        return f"job step {self.step} of allocation {self.job_id}" if self.step else f"Slurm job {self.job_id}"


def pack(entries: dict[str, Path]) -> bytes:
    """A gzipped tar of directories, each under its name in the archive; caches left out."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for arcname, path in entries.items():
            tar.add(path, arcname=arcname, filter=lambda ti: None if "__pycache__" in ti.name else ti)
    return buf.getvalue()


def workloads_tar(workloads_dir: Path) -> bytes:
    return pack({"workloads": workloads_dir, RUNTIME_PACKAGE: RUNTIME_DIR})


RUN_TAGS_LOCK_WAIT_S = 60.0


def tag_run(instance, run_id: str, tags: dict[str, str]) -> None:
    """Add run tags, one writer at a time among this machine's step processes.

    Dagster's add_run_tags rewrites the run's whole tag set from a copy read just before: two steps
    tagging at once (two allocations obtained at a run's start) can put back a value the other just
    replaced, e.g. an allocation's tag back to `unconfirmed`, and a later step then obtains a second
    allocation. Raises LockTimeout after RUN_TAGS_LOCK_WAIT_S seconds.
    """
    from components.core.session import session_dir
    from components.core.shared_files import flocked

    with flocked(session_dir() / f"tags-{run_id}.lock", RUN_TAGS_LOCK_WAIT_S):
        instance.add_run_tags(run_id, tags)
