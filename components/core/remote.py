"""Slurm execution of a planned job through Dagster Pipes over SSH.

Context goes up as a file in the private job directory; messages, stdout and stderr are tailed
back while the job runs (components.core.pipes_remote). The scheduler and the job directory are
the source of truth: lost contact with the login node or the controller is waited out up to the
policy's outage tolerance, never read as the job's end. The Dagster run records the job id (tag
hpc/job/<op>) and, once its outcome was reported, that outcome (hpc/outcome/<op>): a step of the
same run lineage finds a job whose outcome was never reported and re-attaches to it, running or
finished, instead of submitting it again. An interrupted run scancels its job.
"""

from __future__ import annotations

import os
import shlex
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import dagster as dg

if TYPE_CHECKING:
    from components.core.profiles import ClusterProfile
    from components.core.ssh import Transport

from components.core import environments
from components.core.alloc_run import RunAllocation
from components.core.allocation import need_of, step_name
from components.core.contact import ContactWatch, OutageTooLong
from components.core.step_errors import gave_up, job_failure
from components.core.local import unreported_checks
from components.core.metrics import job_metrics
from components.core.outcome import decide, pending_verdict
from components.core.poller import SharedPoller
from components.core.pipes_remote import RemoteFileContextInjector, RemoteFileMessageReader
from components.core.reported import declared_results
from components.core.run_metadata import NO_ACCOUNTING, NOT_ACCOUNTED, plan_values, run_metadata
from components.core.job_record import (OUTCOME_TAG_PREFIX, TAG_PREFIX, UNCONFIRMED, RemotePolicy, SubmittedJob, tag_run,
                                        poll_interval, workloads_tar)
from components.core.render import JobPlan, plan_job, render_script
from components.core.scheduler import ACTIVE, QueueState, SchedulerUnavailable, SlurmClient, SubmissionError
from components.core.shell import quote_path
from components.core.ssh_target import ContactLost, NoSession, TransportError, target_for
from components.core.transports import transport_for

T = TypeVar("T")

# Slurm kills a job KillWait seconds after its limit; allow that and a little accounting lag.
RUN_GRACE_S = 180
# Remote base directories as the login shell expands them, resolved once per connection target.
_BASE_DIRS: dict[tuple, str] = {}


def expanded_base_dir(transport: Transport, profile: ClusterProfile) -> str:
    """The profile's paths.base_dir as the login shell expands it (absolute), once per target.

    A login shell, since sites define $DATA / $WORK in their profile scripts. Raises dg.Failure when it
    does not expand to an absolute path.
    """
    key = (transport.target, profile.paths.base_dir)
    if key not in _BASE_DIRS:
        expr = quote_path(profile.paths.base_dir)
        out = transport.run(f"bash -lc {shlex.quote(f'printf %s {expr}')}").stdout.strip()
        if not out.startswith("/"):
            raise dg.Failure(
                f"paths.base_dir {profile.paths.base_dir!r} expanded to {out!r} on {profile.name}; "
                "set it to an absolute path or a variable the login shell defines"
            )
        _BASE_DIRS[key] = out
    return _BASE_DIRS[key]


class SlurmRun:
    """Submit (or re-attach to) one job and follow it to a terminal state."""

    def __init__(self, context: dg.AssetExecutionContext, plan: JobPlan, project_root: Path, policy: RemotePolicy, op_name: str):
        self.context, self.plan, self.project_root, self.policy, self.op_name = context, plan, project_root, policy, op_name
        self.profile = plan.profile
        self.transport = transport_for(target_for(self.profile))
        self.client = SlurmClient(self.transport)
        # With a shared session every step process on this machine shares one squeue/sacct per
        # interval (flock + cache files beside the session); `ssh.session: process` polls alone.
        session = getattr(self.transport, "session", None)
        self.poller = SharedPoller(self.client, session.poll_dir) if session is not None else None
        log = context.log
        self.watch = ContactWatch(self.profile.name, policy.outage_tolerance_s, log.warning, log.info)
        self.restarts = 0
        # submission.allocation: run: steps of one run share one allocation (components.core.alloc_run).
        self.allocation = RunAllocation(self, policy.allocation_idle_timeout_s)
        self._scripts: dict[str, str] = {}  # job dir -> the script submitted there
        self.job_known = False  # a job may be running: from here on nothing may fail without following it

    def _patiently(self, fn: Callable[..., T], *args, floor_s: float = 0.0) -> T:
        """fn(*args), tried again while contact is lost; raises OutageTooLong after the tolerance.

        Before a job exists, a missing session or a refused host key or login fails the step at
        once (dg.Failure with what to do). Once a job may be running, a missing session is waited
        out like lost contact: `hpc login` within the tolerance lets the step carry on.
        """
        while True:
            try:
                value = fn(*args)
            except (ContactLost, SchedulerUnavailable) as exc:
                time.sleep(self.watch.lost(exc, floor_s))
                continue
            except NoSession as exc:
                if not self.job_known:
                    raise dg.Failure(f"{exc}. Nothing was submitted.") from None
                time.sleep(self.watch.lost(exc, floor_s))
                continue
            except TransportError as exc:
                raise dg.Failure(f"{exc}" + ("" if not self.job_known else "\nThe job may still be running: re-execute this "
                                             "step once this is fixed to re-attach to it.")) from None
            self.watch.restored()
            return value

    # -- remote layout ------------------------------------------------------------------------
    def base_dir(self) -> str:
        return expanded_base_dir(self.transport, self.profile)

    def _make_job_dir(self, attempt: int) -> str:
        base = self.base_dir()
        run_dir = f"{base}/jobs/{self.context.run.run_id}"
        job_dir = f"{run_dir}/{self.op_name}-{attempt}"
        q = shlex.quote
        self.transport.run(
            f"umask 077; mkdir -p {q(base)}/jobs && chmod 700 {q(base)}/jobs && mkdir -p {q(run_dir)} && "
            f"rm -rf {q(job_dir)} && mkdir -m 700 {q(job_dir)} && tar -xzf - -C {q(job_dir)}",
            stdin=workloads_tar(self.project_root / "workloads"),
        )
        return job_dir

    # -- attach or submit ---------------------------------------------------------------------
    def _previous_job(self) -> SubmittedJob | None:
        """The job an earlier step of this run lineage submitted and never reported on, if any."""
        run = self.context.run
        instance = self.context.instance
        for run_id in (run.run_id, run.parent_run_id, run.root_run_id):
            if not run_id:
                continue
            other = run if run_id == run.run_id else instance.get_run_by_id(run_id)
            tags = other.tags if other else {}
            job = SubmittedJob.from_tag(tags.get(TAG_PREFIX + self.op_name, ""))
            if job is None or job.cluster != self.profile.name:
                continue
            concluded = tags.get(OUTCOME_TAG_PREFIX + self.op_name, "").split("|")[0] == job.job_id
            if concluded:
                return None
            if job.job_id == UNCONFIRMED:
                # sbatch's answer was lost: Slurm knows whether the job exists.
                found = self._patiently(self.client.job_in_dir, job.job_dir)
                return replace(job, job_id=found) if found else None
            return job
        return None

    def _conclude(self, job: SubmittedJob, state: str) -> None:
        """Record that this job's outcome was reported: a re-execution submits anew."""
        tag_run(self.context.instance, self.context.run.run_id, {OUTCOME_TAG_PREFIX + self.op_name: f"{job.job_id}|{state}"})

    def execute(self) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
        attempt = 1
        while True:
            outcome = yield from self._attempt(attempt)
            if outcome is None:
                return
            if outcome in self.policy.retry_states and attempt < self.policy.max_attempts:
                self.context.log.warning(f"job ended {outcome}; resubmitting (attempt {attempt + 1} of {self.policy.max_attempts})")
                attempt += 1
                continue
            raise AssertionError("unreachable: failures raise")

    def _attempt(self, attempt: int):
        log = self.context.log
        try:
            previous = self._previous_job() if attempt == 1 else None
            if previous:
                self.job_known = True
                job_dir = previous.job_dir
                log.info(f"re-attaching to Slurm job {previous.job_id} on {self.profile.name}: an earlier step of this run "
                         "submitted it and never reported its outcome")
            else:
                base = self._patiently(self.base_dir)
                self._patiently(environments.prepare, self.profile, self.project_root, self.transport, base,
                                self.plan.job.imports, self.context.log.info)
                job_dir = self._patiently(self._make_job_dir, attempt)
        except OutageTooLong as exc:
            raise dg.Failure(f"{exc}; nothing was submitted. Materialize again once {self.profile.name} answers.") from None
        reader = RemoteFileMessageReader(self.transport, job_dir, final_patience_s=self.policy.outage_tolerance_s, log=log.warning)
        injector = RemoteFileContextInjector(lambda data, path: self._patiently(self.transport.put, data, path),
                                             f"{job_dir}/pipes-context.json")
        job: SubmittedJob | None = previous
        with dg.open_pipes_session(context=self.context.op_execution_context, context_injector=injector, message_reader=reader) as session:
            try:
                if job is None:
                    job = self._submit(job_dir, session.get_bootstrap_env_vars(), attempt)
                reader.job_id = job.job_id
                last = self._wait(job)
            except OutageTooLong as exc:
                reader.final_patience_s = 0
                raise gave_up(exc, job, job_dir, self.profile.name, self.transport.target.login.host, self.policy) from None
            except dg.Failure:
                reader.final_patience_s = 10
                raise
            except BaseException:
                # Run terminated in Dagster (or the process is going down): leave nothing running.
                reader.final_patience_s = 5
                if job is not None:
                    self._cancel(job, "the run was terminated")
                if job is not None and job.step:
                    self.allocation.release("the run was terminated", job)
                raise
        try:
            if not reader.drained:
                raise OutageTooLong(self.profile.name, float(self.policy.outage_tolerance_s), "the job's output could not be read")
            record = self._patiently(self._accounting, job)
            marker = self._patiently(self._exit_marker, job_dir)
        except OutageTooLong as exc:
            raise gave_up(exc, job, job_dir, self.profile.name, self.transport.target.login.host, self.policy) from None
        outcome = decide(last, record, marker)
        if outcome.evidence == "exit-code file":
            log.warning(f"no accounting record for job {job.job_id}; its outcome is taken from the exit-code file the job wrote")
        metadata = job_metrics(record) if record else {"slurm_job_id": job.job_id}
        if job.step:
            metadata["slurm_allocation"] = job.job_id
        metadata |= outcome.metadata() | {"job_dir": job_dir, "attempt": attempt}
        metadata |= plan_values(self.profile.name, self.plan.job.launcher, f"workloads/{self.plan.job.workload}",
                                self._job_script(job_dir))
        metadata["slurm_restarts"] = max(self.restarts, reader.executions - 1)
        self._conclude(job, outcome.state)
        if outcome.succeeded:
            results = list(session.get_results(metadata=run_metadata(metadata, NOT_ACCOUNTED if record else NO_ACCOUNTING)))
            results = declared_results(self.context, results, metadata["workload"])
            yield from results
            yield from unreported_checks(self.context, results)
            return None
        if outcome.state in self.policy.retry_states and attempt < self.policy.max_attempts:
            return outcome.state
        raise job_failure(job, job_dir, self.profile.name, outcome, reader.stderr_tail, metadata)

    def _cancel(self, job: SubmittedJob, why: str) -> bool:
        log = self.context.log
        log.warning(f"cancelling {job.describe()}: {why}")
        for pause in (0.5, 1.0, 2.0, 0):
            try:
                if (self.allocation.cancel(job) if job.step else self.client.cancel(job.job_id)):
                    self._conclude(job, "CANCELLED")
                    return True
            except ContactLost:
                pass
            time.sleep(pause)
        log.error(f"could not cancel Slurm job {job.job_id} on {self.profile.name} (no contact): it may still be running. "
                  f"Run `scancel {job.job_id}` on {self.transport.target.login.host}, or re-execute this step to re-attach to it.")
        return False

    def _submit(self, job_dir: str, pipes_env: dict[str, str], attempt: int = 1) -> SubmittedJob:
        runtime = environments.activation(self.profile, self.project_root, self.base_dir())
        secrets = {name: os.environ.get(name) for name in self.plan.job.forward_env}
        missing = [name for name, value in secrets.items() if value is None]
        if missing:
            raise dg.Failure(f"forward_env names {', '.join(missing)}, which are not set in Dagster's environment")
        if secrets:
            payload = "".join(f"{k}={shlex.quote(v)}\n" for k, v in secrets.items()).encode()
            self._patiently(self.transport.put, payload, f"{job_dir}/.hpc-secrets")
            runtime = replace(runtime, secrets_file=".hpc-secrets")
        runtime = replace(runtime, env=tuple(pipes_env.items()))
        placed = self._place(runtime, attempt)
        if placed is not None:
            runtime = placed[1]
        plan = plan_job(self.profile, self.plan.job, strict=True, runtime=runtime)
        plan = replace(plan, notes=(*plan.notes, *environments.notes(self.profile)))
        script = render_script(plan, self.project_root / "clusters")
        self._patiently(self.transport.put, script.encode(), f"{job_dir}/job.sh", 0o700)
        self._scripts[job_dir] = script
        if placed is not None:
            record, name = placed[0], placed[2]
            step = SubmittedJob(self.profile.name, record.job_id, job_dir, step=name, alloc_dir=record.alloc_dir)
            tag_run(self.context.instance, self.context.run.run_id, {TAG_PREFIX + self.op_name: step.tag()})
            self.job_known = True
            return self.allocation.request(record, job_dir, name)
        # Recorded before sbatch runs: if its answer is lost for good, a re-execution asks Slurm.
        tag_run(self.context.instance, self.context.run.run_id,
                                           {TAG_PREFIX + self.op_name: SubmittedJob(self.profile.name, UNCONFIRMED, job_dir).tag()})
        self.job_known = True  # from the moment sbatch runs, a job may exist
        job_id = self.sbatch(job_dir, "job")
        job = SubmittedJob(self.profile.name, job_id, job_dir)
        self.job_known = True
        tag_run(self.context.instance, self.context.run.run_id, {TAG_PREFIX + self.op_name: job.tag()})
        self.context.log.info(f"submitted Slurm job {job_id} on {self.profile.name} ({job_dir})")
        return job

    def sbatch(self, job_dir: str, what: str, script: str = "job.sh", find: Callable[[str], str | None] | None = None) -> str:
        """sbatch `script` in job_dir and return the job id, never submitting twice: when the answer is
        lost, Slurm is asked first for a job from that directory (`find`, default SlurmClient.job_in_dir).

        Raises dg.Failure when sbatch refuses (Slurm's message, naming `what`: job, job array, allocation).
        """
        find = find or self.client.job_in_dir
        while True:
            try:
                return self.client.submit(job_dir, script)
            except SubmissionError as exc:
                raise dg.Failure(f"sbatch on {self.profile.name} refused the {what}: {exc}\njob dir: {job_dir}") from None
            except (ContactLost, SchedulerUnavailable, NoSession) as exc:
                # The answer was lost, not necessarily the job: ask Slurm before submitting again.
                self.context.log.warning(f"no answer from sbatch ({exc}); looking for the {what} before submitting again")
                time.sleep(self.watch.lost(exc))
                found = self._patiently(find, job_dir)
                if found:
                    return found

    def _place(self, runtime, attempt: int):
        """(allocation record, runtime with the step's srun, step name) when this step runs in the
        run's allocation; None for a job of its own."""
        if self.policy.allocation != "run":
            return None
        need = need_of(plan_job(self.profile, self.plan.job, strict=True), self.op_name)
        record = self.allocation.place(need)
        if record is None:
            return None
        name = step_name(self.op_name, attempt)
        return record, replace(runtime, step_srun=self.allocation.srun_prefix(need, name)), name

    def _wait(self, job: SubmittedJob) -> QueueState | None:
        """Poll until the job leaves the active states; log every transition. Its last squeue
        answer, or None when the controller no longer knows the job (accounting decides then)."""
        if job.step:
            return self.allocation.wait(job)
        log = self.context.log
        limit_s = self.plan.time_limit_s
        started_pending = time.monotonic()
        started_running: float | None = None
        last: tuple[str, str] | None = None
        warned: set[str] = set()
        polls = 0
        while True:
            interval = poll_interval(polls, self.policy.max_poll_interval_s)
            state = self._patiently(self._queue_state, job.job_id, interval, floor_s=interval)
            if state is None:
                return None
            if state.restarts > self.restarts:
                self.restarts = state.restarts
                log.warning(f"job {job.job_id} was requeued (restart {state.restarts}): Slurm runs its script again from the "
                            f"start; the output of execution {state.restarts + 1} follows the line '[hpc] job {job.job_id} "
                            f"requeued' in its logs")
                started_running = None
            if (state.state, state.reason) != last:
                if state.state == "PENDING":
                    log.info(f"job {job.job_id} PENDING ({state.reason})")
                elif state.state == "RUNNING":
                    log.info(f"job {job.job_id} RUNNING on {state.nodes}")
                else:
                    log.info(f"job {job.job_id} {state.state}" + (f" ({state.reason})" if state.reason not in ("", "None") else ""))
                last = (state.state, state.reason)
            if state.state not in ACTIVE:
                return state
            if state.state == "PENDING":
                self._check_pending(job, state, warned)
            now = time.monotonic()
            if state.state == "RUNNING" and started_running is None:
                started_running = now
            if started_running is None and now - started_pending > self.policy.queue_timeout_s:
                self._cancel(job, "queue timeout")
                raise dg.Failure(f"job {job.job_id} waited in the queue longer than {self.policy.queue_timeout_s}s ({state.reason}); cancelled")
            if started_running is not None and limit_s and now - started_running > limit_s + RUN_GRACE_S:
                self._cancel(job, "past its time limit")
                raise dg.Failure(f"job {job.job_id} still {state.state} {RUN_GRACE_S}s past its {limit_s}s limit; cancelled")
            time.sleep(interval)
            polls += 1

    def _queue_state(self, job_id: str, max_age_s: float) -> QueueState | None:
        if self.poller is None:
            return self.client.queue_state(job_id)
        return self.poller.queue_state(job_id, max_age_s)

    def _accounting(self, job: SubmittedJob):
        if job.step:
            return self.allocation.accounting(job)
        job_id = job.job_id
        if self.poller is None:
            return self.client.accounting(job_id)
        try:
            return self.poller.accounting(job_id)
        finally:
            self.poller.forget(job_id)

    def _check_pending(self, job: SubmittedJob, state: QueueState, warned: set[str]) -> None:
        verdict = pending_verdict(state.reason)
        if verdict is None:
            return
        kind, meaning, fix = verdict
        if kind == "permanent":
            self._cancel(job, f"pending reason {state.reason} never clears")
            raise dg.Failure(
                f"Slurm job {job.job_id} on {self.profile.name} can never start: {meaning} (pending reason {state.reason}); "
                f"it was cancelled instead of waiting for the queue timeout.\n  fix: {fix}"
            )
        if state.reason not in warned:
            warned.add(state.reason)
            self.context.log.warning(f"job {job.job_id} is pending with reason {state.reason}: "
                                     f"{meaning.format(job_id=job.job_id)}; it waits until that changes")

    def _job_script(self, job_dir: str) -> str:
        """The script that ran: as submitted, or read back from a job this step re-attached to."""
        if job_dir not in self._scripts:
            result = self._patiently(lambda: self.transport.run(f"cat {shlex.quote(job_dir)}/job.sh", check=False))
            self._scripts[job_dir] = result.stdout if result.exit_code == 0 else f"# {job_dir}/job.sh could not be read back"
        return self._scripts[job_dir]

    def _exit_marker(self, job_dir: str) -> int | None:
        result = self.transport.run(f"cat {shlex.quote(job_dir)}/.hpc-exit-code 2>/dev/null", check=False)
        return int(result.stdout.strip()) if result.stdout.strip().lstrip("-").isdigit() else None
