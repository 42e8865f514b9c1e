"""The orchestrator's side of a run-scoped allocation (submission.allocation: run).

A step of a Dagster run finds its run's allocation on the cluster (run tag hpc/allocation/<cluster>,
under a local lock so concurrent step processes obtain only one), or obtains it: sized from the op
tags of the run's steps on that cluster (components.core.allocation.size) and submitted with sbatch.
It then drops a request into the allocation's requests/ directory and follows its step through the
allocation's marker files, touching the heartbeat that keeps the allocation alive. A step that does
not fit gets its own job, with a log line saying why.

Used by components.core.remote.SlurmRun, whose patience rules (lost contact, no session) apply to
every command here.
"""

from __future__ import annotations

import re
import shlex
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg

from components.core import allocation as A
from components.core.job_record import UNCONFIRMED, SubmittedJob, poll_interval, tag_run
from components.core.scheduler import ACTIVE, Accounting, QueueState, SchedulerUnavailable, SlurmClient
from components.core.ssh_target import ContactLost, NoSession
from components.core.shared_files import LockTimeout, flocked
from components.core.units import format_time

if TYPE_CHECKING:
    from components.core.remote import SlurmRun

LOCK_WAIT_S = 600.0


def run_needs(context: dg.AssetExecutionContext, cluster: str) -> list[A.StepNeed]:
    """The StepNeeds of the run's ops that ask for the run's allocation on `cluster` (their op tags)."""
    keys = context.run.step_keys_to_execute
    needs = []
    for node in context.job_def.graph.node_defs:
        tags = node.tags or {}
        if tags.get(A.MODE_TAG) != "run" or tags.get("hpc/cluster") != cluster:
            continue
        if keys is not None and node.name not in keys:
            continue
        need = A.StepNeed.from_json(tags.get(A.NEEDS_TAG, ""))
        if need is not None:
            need = A.StepNeed(**{**need.__dict__, "op": node.name})
            needs.append(need)
    return needs


class RunAllocation:
    """One step process's handle on its run's allocation on one cluster."""

    def __init__(self, run: SlurmRun, idle_timeout_s: int):
        self.run = run
        self.idle_timeout_s = idle_timeout_s
        self.record: A.AllocationRecord | None = None
        self.profile = run.profile
        self.per_core_mb: int | None = None  # memory per core of the step's partition, MB
        self.tag_key = ""  # the run tag of the allocation for the step's partition

    # -- placing a step -------------------------------------------------------------------------
    def place(self, need: A.StepNeed) -> A.AllocationRecord | None:
        """The allocation this step runs in (found or obtained); None when it does not fit (logged)."""
        run, log = self.run, self.run.context.log
        self.per_core_mb = A.mem_per_core_mb(self.profile, need.partition)
        if need.why_not:
            log.info(f"{need.op} runs as its own Slurm job, not in the run's allocation: {need.why_not}")
            return None
        # One allocation per partition (with its QoS and account) of the run on this cluster.
        self.tag_key = f"{A.ALLOCATION_TAG_PREFIX}{self.profile.name}/{need.partition}"
        lock = _lock_path(run.context.run.run_id, f"{self.profile.name}-{need.partition}")
        try:
            with flocked(lock, LOCK_WAIT_S):
                record = self._current()
                if record is None:
                    record = self._obtain(need)
        except LockTimeout as exc:
            raise dg.Failure(f"another step of this run held the allocation lock too long: {exc}") from None
        why = A.fits(need, record.shape, self.per_core_mb)
        if why:
            log.info(f"{need.op} runs as its own Slurm job, not in allocation {record.job_id}: {why}")
            return None
        self.record = record
        return record

    def _current(self) -> A.AllocationRecord | None:
        """The run's allocation on this cluster if it may still take steps."""
        run = self.run
        tags = run.context.instance.get_run_by_id(run.context.run.run_id).tags
        record = A.AllocationRecord.from_tag(tags.get(self.tag_key, ""))
        if record is None:
            return None
        if record.job_id == UNCONFIRMED:
            found = run._patiently(run.client.job_in_dir, record.alloc_dir)
            if not found:
                return None
            record = A.AllocationRecord(record.cluster, found, record.alloc_dir, record.shape)
        # Asked directly, not from the shared poller's cache: an answer cached a moment before the
        # allocation was submitted does not list it, and would make this step obtain a second one.
        state = run._patiently(run.client.queue_state, record.job_id)
        if state is None or state.state not in ACTIVE:
            return None
        released = run._patiently(lambda: run.transport.run(f"test -e {shlex.quote(record.alloc_dir)}/release", check=False))
        return None if released.exit_code == 0 else record

    def _obtain(self, need: A.StepNeed) -> A.AllocationRecord:
        run, context = self.run, self.run.context
        others = run_needs(context, self.profile.name)
        cpus, mem = A.node_of(self.profile, need.partition)
        max_time = _max_time_s(self.profile, need.partition)
        shape = A.size(need, others, self.per_core_mb, max_time, run.policy.allocation_resources,
                       node_cpus=cpus, node_mem_mb=mem)
        run_id = context.run.run_id
        name = f"alloc-{run_id[:8]}"
        plan = A.allocation_plan(self.profile, shape, name)
        script = A.render_allocation(plan, run.project_root / "clusters", idle_timeout_s=self.idle_timeout_s,
                                     abandon_s=run.policy.outage_tolerance_s)
        base = run._patiently(run.base_dir)
        # Unique: a run may hold allocations on several partitions, and obtain a new one after one ended.
        alloc_dir = f"{base}/jobs/{run_id}/allocation-{re.sub(r'[^A-Za-z0-9_.-]', '_', need.partition)}-{uuid.uuid4().hex[:8]}"
        q = shlex.quote
        run._patiently(lambda: run.transport.run(
            f"umask 077; mkdir -p {q(base)}/jobs && chmod 700 {q(base)}/jobs && mkdir -p {q(alloc_dir)}/requests "
            f"{q(alloc_dir)}/started {q(alloc_dir)}/finished && touch {q(alloc_dir)}/heartbeat"))
        run._patiently(run.transport.put, script.encode(), f"{alloc_dir}/allocation.sh", 0o700)
        tag_key = self.tag_key
        tag_run(context.instance, run_id, {tag_key: A.AllocationRecord(self.profile.name, UNCONFIRMED, alloc_dir, shape).tag()})
        job_id = run.sbatch(alloc_dir, "run's allocation", script="allocation.sh")
        record = A.AllocationRecord(self.profile.name, job_id, alloc_dir, shape)
        tag_run(context.instance, run_id, {tag_key: record.tag()})
        context.log.info(f"obtained allocation {job_id} on {self.profile.name} for this run: {shape.describe()}, "
                         f"sized for {', '.join(shape.steps)} ({alloc_dir})")
        return record

    # -- one step -------------------------------------------------------------------------------
    def srun_prefix(self, need: A.StepNeed, name: str):
        return A.srun_prefix(self.profile, need, name, self.per_core_mb)

    def request(self, record: A.AllocationRecord, job_dir: str, name: str) -> SubmittedJob:
        """Ask the allocation to start the job script in job_dir as step `name`."""
        run = self.run
        run._patiently(lambda: run.transport.run(request_command(record.alloc_dir, job_dir, name)))
        job = SubmittedJob(self.profile.name, record.job_id, job_dir, step=name, alloc_dir=record.alloc_dir)
        run.context.log.info(f"asked allocation {record.job_id} on {self.profile.name} to run step {name} ({job_dir})")
        return job

    def step_state(self, job: SubmittedJob) -> tuple[str, int | None]:
        """("requested" | "started" | "finished" | "gone", exit code when finished); touches the heartbeat."""
        a, n = shlex.quote(job.alloc_dir), shlex.quote(job.step)
        result = self.run.transport.run(
            f"touch {a}/heartbeat 2>/dev/null; if [ -e {a}/finished/{n} ]; then echo finished $(cat {a}/finished/{n}); "
            f"elif [ -e {a}/started/{n} ]; then echo started; elif [ -e {a}/requests/{n} ]; then echo requested; "
            f"else echo gone; fi", check=False)
        words = result.stdout.split()
        if not words:
            return "gone", None
        code = int(words[1]) if len(words) > 1 and words[1].lstrip("-").isdigit() else None
        return words[0], code

    def wait(self, job: SubmittedJob) -> QueueState | None:
        """Follow the step until it ended; its state as a QueueState (COMPLETED/FAILED from its exit
        code, or the allocation's state when the allocation ended first)."""
        run, log = self.run, self.run.context.log
        started_pending = time.monotonic()
        last = None
        polls = 0
        warned: set[str] = set()
        while True:
            interval = poll_interval(polls, run.policy.max_poll_interval_s)
            where, code = run._patiently(self.step_state, job, floor_s=interval)
            alloc = run._patiently(run._queue_state, job.job_id, interval, floor_s=interval)
            seen = (where, alloc.state if alloc else None, alloc.reason if alloc else None)
            if seen != last:
                if where == "requested" and alloc is not None and alloc.state == "PENDING":
                    log.info(f"step {job.step} waits for allocation {job.job_id}: PENDING ({alloc.reason})")
                elif where == "started":
                    log.info(f"step {job.step} RUNNING in allocation {job.job_id} on {alloc.nodes if alloc else '?'}")
                last = seen
            if where == "gone":
                log.warning(f"step {job.step} is no longer asked of allocation {job.job_id} (its request was withdrawn)")
                return QueueState("CANCELLED", "request withdrawn", "")
            if where == "finished":
                log.info(f"step {job.step} in allocation {job.job_id} ended with exit code {code}")
                return QueueState("COMPLETED" if code == 0 else "FAILED", "", alloc.nodes if alloc else "")
            if alloc is None or alloc.state not in ACTIVE:
                ended = alloc.state if alloc else "ended"
                log.warning(f"allocation {job.job_id} {ended} before step {job.step} finished")
                return QueueState(alloc.state if alloc else "CANCELLED", "allocation ended", "")
            if alloc.state == "PENDING":
                try:
                    run._check_pending(job, alloc, warned)
                except dg.Failure:
                    self.release(f"pending reason {alloc.reason} never clears", job)
                    raise
                if time.monotonic() - started_pending > run.policy.queue_timeout_s:
                    self.release("queue timeout", job)
                    raise dg.Failure(f"allocation {job.job_id} waited in the queue longer than {run.policy.queue_timeout_s}s "
                                     f"({alloc.reason}); cancelled")
            time.sleep(interval)
            polls += 1

    def accounting(self, job: SubmittedJob, attempts: int = 10, delay_s: float = 0.5) -> Accounting | None:
        """sacct's record of the step (JobID <allocation>.<n>, found by its name); None after ~11 s without one."""
        client: SlurmClient = self.run.client
        if self.run.poller is not None:
            self.run.poller.forget(job.job_id)  # this process follows the allocation no more (others re-register)
        for attempt in range(attempts):
            try:
                text = client.sacct_text([job.job_id])
            except (ContactLost, SchedulerUnavailable, NoSession):
                text = ""  # no news is no record yet
            record = step_record(client, text, job.step)
            if record is not None and record.state not in ACTIVE:
                return record
            time.sleep(delay_s * (1 + attempt // 3))
        return None

    def cancel(self, job: SubmittedJob) -> bool:
        """Stop the step alone (a request not started yet is withdrawn); True when it is gone."""
        run = self.run
        q = shlex.quote
        run.transport.run(f"rm -f {q(job.alloc_dir)}/requests/{q(job.step)}", check=False)
        steps = run.transport.run(f"squeue -h -s -j {int(job.job_id)} -o '%i|%j'", check=False, timeout=60)
        for line in steps.stdout.splitlines():
            step_id, _, name = line.partition("|")
            if name.strip() == job.step and step_id.strip().replace(".", "").isdigit():
                result = run.transport.run(f"scancel {q(step_id.strip())}", check=False, timeout=60)
                return result.exit_code == 0
        return True

    def release(self, why: str, job: SubmittedJob) -> None:
        """End the step's allocation now (scancel): the run was terminated or the allocation can never start."""
        if not job.step or job.job_id == UNCONFIRMED:
            return
        self.run.context.log.warning(f"releasing allocation {job.job_id} on {self.profile.name}: {why}")
        try:
            self.run.transport.run(f"touch {shlex.quote(job.alloc_dir)}/release; scancel {int(job.job_id)}",
                                   check=False, timeout=60)
        except (ContactLost, NoSession) as exc:
            self.run.context.log.warning(f"could not release allocation {job.job_id} ({exc}); it ends itself "
                                         f"{format_time(self.idle_timeout_s)} after the last heartbeat")


def step_record(client: SlurmClient, text: str, name: str) -> Accounting | None:
    """The record of the job step named `name` in `sacct -n -P` output of the allocation (the last one by that name)."""
    fields = client.SACCT_FIELDS
    rows = [dict(zip(fields, line.split("|"))) for line in text.strip().splitlines() if line.count("|") == len(fields) - 1]
    mine = [r for r in rows if r.get("JobName") == name and "." in r["JobID"]]
    if not mine:
        return None
    row = mine[-1]
    return client.parse_accountings([row["JobID"]], "|".join(row[f] for f in fields)).get(row["JobID"])


def request_command(alloc_dir: str, job_dir: str, name: str) -> str:
    """The shell command that asks the allocation's dispatcher to start the job script in job_dir as
    step `name` (and touches the heartbeat).

    Idempotent: a retry after a lost answer does not ask a second time. The request appears whole: it
    is written beside requests/ and renamed into it, because the dispatcher starts whatever it finds
    there (a partial file written inside was once taken for a step named NAME.part, and the rename failed).
    """
    q = shlex.quote
    a = alloc_dir
    partial = f"{a}/.request-{name}.part"
    return (f"umask 077; touch {q(a)}/heartbeat; [ -e {q(f'{a}/started/{name}')} ] || [ -e {q(f'{a}/finished/{name}')} ] || "
            f"{{ printf %s {q(job_dir)} > {q(partial)} && mv {q(partial)} {q(f'{a}/requests/{name}')}; }}")


def _max_time_s(profile, partition: str) -> int | None:
    from components.core.units import parse_time_s

    for pclass in (profile.slurm.partitions.values() if profile.slurm else ()):
        if pclass.partition == partition and pclass.max_time:
            return parse_time_s(pclass.max_time)
    return parse_time_s(profile.slurm.max_time) if profile.slurm and profile.slurm.max_time else None


def _lock_path(run_id: str, cluster: str) -> Path:
    from components.core.session import session_dir

    return session_dir() / f"alloc-{cluster}-{run_id}.lock"
