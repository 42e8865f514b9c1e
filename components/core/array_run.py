"""The partitions of one run as ONE Slurm job array: `sbatch --array=0-(N-1)%K`, task i = partition i.

Layout of the job directory (one per step, as for a single job):
    job.sh                      the array's script (#SBATCH --array, --output=tasks/%a/slurm-%A_%a.out)
    keys.json                   the partition key of each task index (read back on re-attach)
    tasks/<i>/task.env          HPC_PARTITION_KEY and the task's own Pipes bootstrap variables
    tasks/<i>/pipes-context.json, pipes-messages.jsonl, slurm-<A>_<i>.out/.err, .hpc-exit-code

Each task has its own Pipes session (context narrowed to its partition), reader and stderr tail, so
each partition gets its own results and sacct figures (job id 123_4). One squeue per poll follows
every task (squeue prints running tasks as 123_4 and pending ones as 123_[5-9%8]); Terminate
scancels the array (all tasks); the run tag hpc/array/<op> records the array so that a re-executed
step of the same lineage re-attaches to an array whose outcome was never reported.
"""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import tarfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path

import dagster as dg

from components.core import environments
from components.core.contact import OutageTooLong
from components.core.job_record import UNCONFIRMED, RemotePolicy, tag_run
from components.core.metrics import job_metrics
from components.core.outcome import decide
from components.core.partition_runs import TaskContextInjector, TaskResult
from components.core.pipes_remote import RemoteFileMessageReader
from components.core.job_record import poll_interval
from components.core.remote import SlurmRun
from components.core.render import JobPlan, plan_job, render_script
from components.core.reported import declared_results
from components.core.run_metadata import NO_ACCOUNTING, NOT_ACCOUNTED, plan_values, run_metadata
from components.core.scheduler import ACTIVE, QueueState, SchedulerUnavailable, parse_queue_states
from components.core.ssh_target import ContactLost

ARRAY_TAG_PREFIX = "hpc/array/"
ARRAY_OUTCOME_TAG_PREFIX = "hpc/array-outcome/"
_PENDING_RANGE = re.compile(r"^(\d+)_\[([\d,\-%]+)\]$")


@dataclass(frozen=True)
class SubmittedArray:
    """A step's job array as its run tag records it: cluster|array job id|job dir|tasks."""

    cluster: str
    job_id: str
    job_dir: str
    tasks: int

    def tag(self) -> str:
        return f"{self.cluster}|{self.job_id}|{self.job_dir}|{self.tasks}"

    @staticmethod
    def from_tag(value: str) -> SubmittedArray | None:
        parts = value.split("|")
        if len(parts) != 4 or not parts[3].isdigit():
            return None
        return SubmittedArray(parts[0], parts[1], parts[2], int(parts[3]))


def task_states(states: dict[str, QueueState], array_id: str, tasks: int) -> dict[int, QueueState]:
    """squeue's answer for an array as {task index: state}. Running/finished tasks appear as "A_i",
    tasks not yet started as "A_[0-9%8]" or "A_[3,5-9]"; a task squeue no longer lists is absent."""
    out: dict[int, QueueState] = {}
    for job_id, state in states.items():
        if job_id.startswith(f"{array_id}_") and job_id[len(array_id) + 1:].isdigit():
            out[int(job_id[len(array_id) + 1:])] = state
            continue
        match = _PENDING_RANGE.match(job_id)
        if match and match.group(1) == array_id:
            for part in match.group(2).split("%")[0].split(","):
                low, _, high = part.partition("-")
                if low.isdigit():
                    for index in range(int(low), int(high or low) + 1):
                        if index < tasks:
                            out.setdefault(index, state)
    return out


def _tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o600, int(time.time())
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


class ArrayRun(SlurmRun):
    """Submit (or re-attach to) one job array for the partitions of a step and follow every task."""

    def __init__(self, context: dg.AssetExecutionContext, plan: JobPlan, project_root: Path, policy: RemotePolicy,
                 op_name: str, definition: dg.PartitionsDefinition | None, max_concurrent: int):
        super().__init__(context, plan, project_root, policy, op_name)
        self.definition, self.max_concurrent = definition, max_concurrent

    # -- run tags ---------------------------------------------------------------------------
    def _previous_array(self) -> SubmittedArray | None:
        run, instance = self.context.run, self.context.instance
        for run_id in (run.run_id, run.parent_run_id, run.root_run_id):
            if not run_id:
                continue
            other = run if run_id == run.run_id else instance.get_run_by_id(run_id)
            tags = other.tags if other else {}
            array = SubmittedArray.from_tag(tags.get(ARRAY_TAG_PREFIX + self.op_name, ""))
            if array is None or array.cluster != self.profile.name:
                continue
            if tags.get(ARRAY_OUTCOME_TAG_PREFIX + self.op_name, "").split("|")[0] == array.job_id:
                return None
            if array.job_id == UNCONFIRMED:
                # sbatch's answer was lost: Slurm knows whether the array exists.
                found = self._patiently(self._array_in_dir, array.job_dir)
                return replace(array, job_id=found) if found else None
            return array
        return None

    def _conclude(self, job, state: str) -> None:
        tag_run(self.context.instance, self.context.run.run_id, {ARRAY_OUTCOME_TAG_PREFIX + self.op_name: f"{job.job_id}|{state}"})

    def _cancel(self, array: SubmittedArray, why: str) -> bool:
        """scancel the array job id: every task, pending or running."""
        self.context.log.warning(f"cancelling Slurm job array {array.job_id} (all {array.tasks} tasks): {why}")
        for pause in (0.5, 1.0, 2.0, 0):
            try:
                if self.client.cancel(array.job_id):
                    self._conclude(array, "CANCELLED")
                    return True
            except ContactLost:
                pass
            time.sleep(pause)
        self.context.log.error(f"could not cancel Slurm job array {array.job_id} on {self.profile.name} (no contact): "
                               f"run `scancel {array.job_id}` on {self.transport.target.login.host}")
        return False

    # -- the step ---------------------------------------------------------------------------
    def run_partitions(self, keys: list[str]) -> list[TaskResult]:
        """Run one task per key (in order) and return each task's outcome; raises dg.Failure only
        for what fails the whole array (sbatch refused, contact lost for too long)."""
        log = self.context.log
        previous = self._previous_array()
        try:
            if previous is not None:
                job_dir = previous.job_dir
                keys = self._read_keys(job_dir) or keys
                self.job_known = True
                log.info(f"re-attaching to Slurm job array {previous.job_id} on {self.profile.name} ({len(keys)} tasks): "
                         "an earlier step of this run submitted it and never reported its outcome")
            else:
                base = self._patiently(self.base_dir)
                self._patiently(environments.prepare, self.profile, self.project_root, self.transport, base,
                                self.plan.job.imports, log.info)
                job_dir = self._patiently(self._make_job_dir, 1)
        except OutageTooLong as exc:
            raise dg.Failure(f"{exc}; nothing was submitted. Materialize again once {self.profile.name} answers.") from None
        task_dirs = [f"{job_dir}/tasks/{i}" for i in range(len(keys))]
        readers = [RemoteFileMessageReader(self.transport, d, final_patience_s=self.policy.outage_tolerance_s, log=log.warning)
                   for d in task_dirs]
        injectors = [TaskContextInjector(f"{d}/pipes-context.json", key, self.definition) for d, key in zip(task_dirs, keys)]
        array = previous
        with ExitStack() as stack:
            sessions = [stack.enter_context(dg.open_pipes_session(context=self.context.op_execution_context,
                                                                  context_injector=injector, message_reader=reader))
                        for injector, reader in zip(injectors, readers)]
            try:
                if array is None:
                    self._upload_tasks(job_dir, keys, sessions, injectors)
                    array = self._submit_array(job_dir, len(keys))
                for index, reader in enumerate(readers):
                    reader.job_id = f"{array.job_id}_{index}"
                last = self._wait_array(array)
            except OutageTooLong as exc:
                for reader in readers:
                    reader.final_patience_s = 0
                raise self._gave_up(exc, array, job_dir) from None
            except dg.Failure:
                for reader in readers:
                    reader.final_patience_s = 10
                raise
            except BaseException:
                for reader in readers:
                    reader.final_patience_s = 5
                if array is not None:
                    self._cancel(array, "the run was terminated")
                raise
        return self._harvest(array, keys, task_dirs, readers, sessions, last)

    def _read_keys(self, job_dir: str) -> list[str] | None:
        result = self._patiently(lambda: self.transport.run(f"cat {shlex.quote(job_dir)}/keys.json", check=False))
        try:
            keys = json.loads(result.stdout) if result.exit_code == 0 else None
        except json.JSONDecodeError:
            return None
        return [str(k) for k in keys] if isinstance(keys, list) else None

    def _upload_tasks(self, job_dir: str, keys: list[str], sessions, injectors) -> None:
        """Every task's directory in one upload: its env (key, Pipes bootstrap), its Pipes context, its secrets."""
        secrets = {name: os.environ.get(name) for name in self.plan.job.forward_env}
        missing = [name for name, value in secrets.items() if value is None]
        if missing:
            raise dg.Failure(f"forward_env names {', '.join(missing)}, which are not set in Dagster's environment")
        files: dict[str, bytes] = {"keys.json": json.dumps(keys).encode()}
        for index, (key, session, injector) in enumerate(zip(keys, sessions, injectors)):
            env = {"HPC_PARTITION_KEY": key, **session.get_bootstrap_env_vars()}
            files[f"tasks/{index}/task.env"] = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items()).encode()
            files[f"tasks/{index}/pipes-context.json"] = injector.data
            if secrets:
                files[f"tasks/{index}/.hpc-secrets"] = "".join(f"{k}={shlex.quote(v)}\n" for k, v in secrets.items()).encode()
        q = shlex.quote(job_dir)
        self._patiently(lambda: self.transport.run(f"umask 077; tar -xzf - -C {q}", stdin=_tar(files)))

    def _submit_array(self, job_dir: str, tasks: int) -> SubmittedArray:
        runtime = environments.activation(self.profile, self.project_root, self.base_dir())
        job = replace(self.plan.job, array=(tasks, self.max_concurrent))
        plan = plan_job(self.profile, job, strict=True, runtime=runtime)
        plan = replace(plan, notes=(*plan.notes, *environments.notes(self.profile)))
        script = render_script(plan, self.project_root / "clusters")
        self._patiently(self.transport.put, script.encode(), f"{job_dir}/job.sh", 0o700)
        self._scripts[job_dir] = script
        # Recorded before sbatch runs: if its answer is lost for good, a re-execution asks Slurm.
        tag_run(self.context.instance, self.context.run.run_id, {
            ARRAY_TAG_PREFIX + self.op_name: SubmittedArray(self.profile.name, UNCONFIRMED, job_dir, tasks).tag()})
        self.job_known = True
        job_id = self.sbatch(job_dir, "job array", find=self._array_in_dir)
        array = SubmittedArray(self.profile.name, job_id, job_dir, tasks)
        tag_run(self.context.instance, self.context.run.run_id, {ARRAY_TAG_PREFIX + self.op_name: array.tag()})
        self.context.log.info(f"submitted Slurm job array {job_id} on {self.profile.name}: {tasks} task(s), "
                              f"at most {min(tasks, self.max_concurrent)} at once ({job_dir})")
        return array

    def _wait_array(self, array: SubmittedArray) -> dict[int, QueueState]:
        """Poll until no task is active; the last state squeue gave of each task (absent: left squeue)."""
        log = self.context.log
        last: dict[int, QueueState] = {}
        summary = ""
        started = time.monotonic()
        polls = 0
        while True:
            interval = poll_interval(polls, self.policy.max_poll_interval_s)
            states = task_states(self._patiently(self._array_queue, array.job_id, floor_s=interval), array.job_id, array.tasks)
            last.update(states)
            counts: dict[str, int] = {}
            for state in states.values():
                counts[state.state] = counts.get(state.state, 0) + 1
            text = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
            if text != summary:
                log.info(f"job array {array.job_id}: {text or 'no task in the queue'}")
                summary = text
            if not any(s.state in ACTIVE for s in states.values()):
                return last
            if all(s.state == "PENDING" for s in states.values()) and time.monotonic() - started > self.policy.queue_timeout_s:
                self._cancel(array, "queue timeout")
                raise dg.Failure(f"job array {array.job_id} waited in the queue longer than {self.policy.queue_timeout_s}s; cancelled")
            time.sleep(interval)
            polls += 1

    def _array_in_dir(self, job_dir: str) -> str | None:
        """The array job id Slurm knows for job_dir (squeue prints 123_4 or 123_[0-9%8]), if any."""
        found = self.client.job_in_dir(job_dir)
        return found.split("_")[0] if found else None

    def _array_queue(self, array_id: str) -> dict[str, QueueState]:
        """One squeue for every task of the array, keyed as JobArrayID prints them (123_4, 123_[5-9%8]);
        `-O JobID` would print each task's own numeric id. Raises SchedulerUnavailable when no answer came."""
        result = self.transport.run(f"squeue --me -h -t all -j {int(array_id)} -O 'JobArrayID:|,{self.client.SQUEUE_FORMAT}'",
                                    check=False, timeout=60)
        if result.exit_code != 0 and "Invalid job id" not in result.stderr:
            raise SchedulerUnavailable(result.stderr.strip().splitlines()[0] if result.stderr.strip() else f"squeue exited {result.exit_code}")
        return parse_queue_states(result.stdout)

    def _accountings(self, array: SubmittedArray):
        ids = [f"{array.job_id}_{i}" for i in range(array.tasks)]
        records: dict = {}
        for attempt in range(10):  # records reach sacct a second or two after a task ends
            try:
                records = self.client.accountings(ids)
            except Exception:  # noqa: BLE001 - no accounting is no evidence; the exit-code files decide then
                records = {}
            if len(records) == len(ids) and all(r.state not in ACTIVE for r in records.values()):
                break
            time.sleep(0.5 * (1 + attempt // 3))
        return records

    def _markers(self, job_dir: str, tasks: int) -> dict[int, int]:
        q = shlex.quote(job_dir)
        result = self.transport.run(f"cd {q}/tasks && for d in *; do [ -f \"$d/.hpc-exit-code\" ] && "
                                    f"printf '%s:%s\\n' \"$d\" \"$(cat \"$d/.hpc-exit-code\")\"; done; true", check=False)
        out = {}
        for line in result.stdout.splitlines():
            index, _, code = line.partition(":")
            if index.isdigit() and code.strip().lstrip("-").isdigit():
                out[int(index)] = int(code.strip())
        return out

    def _harvest(self, array, keys, task_dirs, readers, sessions, last) -> list[TaskResult]:
        try:
            records = self._patiently(self._accountings, array)
            markers = self._patiently(self._markers, array.job_dir, array.tasks)
        except OutageTooLong as exc:
            raise self._gave_up(exc, array, array.job_dir) from None
        script = self._job_script(array.job_dir)
        workload = f"workloads/{self.plan.job.workload}"
        out: list[TaskResult] = []
        states: dict[str, int] = {}
        for index, (key, task_dir, reader, session) in enumerate(zip(keys, task_dirs, readers, sessions)):
            task_id = f"{array.job_id}_{index}"
            record = records.get(task_id)
            outcome = decide(last.get(index), record, markers.get(index))
            states[outcome.state] = states.get(outcome.state, 0) + 1
            metadata = job_metrics(record) if record else {"slurm_job_id": task_id}
            metadata |= outcome.metadata() | {"job_dir": task_dir, "attempt": 1, "partition_key": key,
                                              "slurm_array_job_id": array.job_id}
            metadata |= plan_values(self.profile.name, self.plan.job.launcher, workload, script)
            metadata["slurm_restarts"] = reader.executions - 1
            stderr = reader.stderr_tail.text()
            if not outcome.succeeded or not reader.drained:
                why = outcome.cause() if reader.drained else "its output could not be read"
                out.append(TaskResult(key, failure=f"task {task_id} ended {outcome.state} ({outcome.exit_text()}): {why}; "
                                                    f"task dir {task_dir}", stderr_tail=stderr, metadata=metadata))
                continue
            results = list(session.get_results(metadata=run_metadata(metadata, NOT_ACCOUNTED if record else NO_ACCOUNTING)))
            out.append(TaskResult(key, results=declared_results(self.context, results, workload), metadata=metadata))
        self._conclude(array, ",".join(f"{n} {s}" for s, n in sorted(states.items())))
        self.context.log.info(f"job array {array.job_id} ended: " + ", ".join(f"{n} {s}" for s, n in sorted(states.items())))
        return out
