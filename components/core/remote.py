"""Slurm execution of a planned job through Dagster Pipes over SSH.

Context goes up as a file in the private job directory; messages, stdout and stderr are tailed
back while the job runs. The Dagster run records the job id so a restarted process re-attaches
instead of submitting a duplicate; an interrupted run scancels its job.
"""

from __future__ import annotations

import base64
import collections
import io
import json
import os
import shlex
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import dagster as dg

from components.core import environments
from components.core.local import STDERR_TAIL_LINES, unreported_checks
from components.core.metrics import job_metrics
from components.core.render import RUNTIME_DIR, RUNTIME_PACKAGE, JobPlan, plan_job, render_script
from components.core.shell import quote_path
from components.core.scheduler import ACTIVE, FAILURE_CAUSES, SUCCESS, SlurmClient, SubmissionError
from components.core.ssh import Transport, target_for, transport_for

TAG_PREFIX = "hpc/job/"
# Slurm kills a job KillWait seconds after its limit; allow that and a little accounting lag.
RUN_GRACE_S = 180
# Remote base directories as the login shell expands them, resolved once per connection target.
_BASE_DIRS: dict[tuple, str] = {}
POLL_SCHEDULE_S = (0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0)


@dataclass(frozen=True)
class RemotePolicy:
    queue_timeout_s: int = 7 * 86400
    max_poll_interval_s: float = 10.0
    retry_states: tuple[str, ...] = ()
    max_attempts: int = 1


@dataclass(frozen=True)
class SubmittedJob:
    cluster: str
    job_id: str
    job_dir: str

    def tag(self) -> str:
        return f"{self.cluster}|{self.job_id}|{self.job_dir}"

    @staticmethod
    def from_tag(value: str) -> SubmittedJob | None:
        parts = value.split("|", 2)
        return SubmittedJob(*parts) if len(parts) == 3 else None


class _Tail:
    """Follow remote files from byte offsets, advancing only past complete lines."""

    def __init__(self, transport: Transport, paths: dict[str, str]):
        self.transport = transport
        self.paths = paths
        self.offsets = {name: 0 for name in paths}

    def read(self) -> dict[str, list[str]]:
        parts = [
            f"tail -c +{self.offsets[name] + 1} {shlex.quote(path)} 2>/dev/null | base64 -w0; echo"
            for name, path in self.paths.items()
        ]
        result = self.transport.run("; ".join(parts), check=False, timeout=60)
        chunks = result.stdout.split("\n")
        lines: dict[str, list[str]] = {}
        for (name, _), chunk in zip(self.paths.items(), chunks):
            data = base64.b64decode(chunk) if chunk else b""
            complete = data.rfind(b"\n") + 1  # a partial last line waits for the next read
            self.offsets[name] += complete
            lines[name] = data[:complete].decode("utf-8", errors="replace").splitlines()
        return lines


class RemoteFileContextInjector(dg.PipesContextInjector):
    def __init__(self, transport: Transport, path: str):
        self.transport, self.path = transport, path

    @contextmanager
    def inject_context(self, context_data):
        self.transport.put(json.dumps(context_data).encode(), self.path)
        yield {"path": self.path}

    def no_messages_debug_text(self) -> str:
        return f"Pipes context was written to {self.path} on the cluster."


class RemoteFileMessageReader(dg.PipesMessageReader):
    """Tails the job's Pipes messages file and its stdout/stderr over the shared connection."""

    def __init__(self, transport: Transport, job_dir: str, interval_s: float = 0.5):
        self.transport, self.job_dir, self.interval_s = transport, job_dir, interval_s
        self.messages_path = f"{job_dir}/pipes-messages.jsonl"
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
        self.job_id: str | None = None

    @contextmanager
    def read_messages(self, handler) -> Iterator[dict]:
        stop = threading.Event()
        thread = threading.Thread(target=self._follow, args=(handler, stop), daemon=True)
        thread.start()
        try:
            yield {"path": self.messages_path}
        finally:
            stop.set()
            thread.join(timeout=30)

    def _follow(self, handler, stop: threading.Event) -> None:
        tail = _Tail(self.transport, {"messages": self.messages_path})
        while True:
            final = stop.is_set()
            paths = {"messages": self.messages_path}
            if self.job_id:
                paths |= {"stdout": f"{self.job_dir}/slurm-{self.job_id}.out", "stderr": f"{self.job_dir}/slurm-{self.job_id}.err"}
                for name in paths:
                    tail.offsets.setdefault(name, 0)
            tail.paths = paths
            try:
                lines = tail.read()
            except Exception as exc:  # a dropped connection must not kill the step; the poller decides
                lines = {}
                print(f"[hpc] could not read job output yet: {exc}", file=sys.stderr)
            for line in lines.get("messages", []):
                try:
                    handler.handle_message(json.loads(line))
                except json.JSONDecodeError:
                    print(f"[hpc] ignoring a malformed Pipes message: {line[:200]}", file=sys.stderr)
            for line in lines.get("stdout", []):
                sys.stdout.write(line + "\n")
            for line in lines.get("stderr", []):
                self.stderr_tail.append(line)
                sys.stderr.write(line + "\n")
            sys.stdout.flush()
            sys.stderr.flush()
            if final:
                return
            stop.wait(self.interval_s)

    def no_messages_debug_text(self) -> str:
        return f"Pipes messages are read from {self.messages_path} on the cluster."


def pack(entries: dict[str, Path]) -> bytes:
    """A gzipped tar of directories, each under its name in the archive; caches left out."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for arcname, path in entries.items():
            tar.add(path, arcname=arcname, filter=lambda ti: None if "__pycache__" in ti.name else ti)
    return buf.getvalue()


def _workloads_tar(workloads_dir: Path) -> bytes:
    return pack({"workloads": workloads_dir, RUNTIME_PACKAGE: RUNTIME_DIR})


class SlurmRun:
    """Submit (or re-attach to) one job and follow it to a terminal state."""

    def __init__(self, context: dg.AssetExecutionContext, plan: JobPlan, project_root: Path, policy: RemotePolicy, op_name: str):
        self.context, self.plan, self.project_root, self.policy, self.op_name = context, plan, project_root, policy, op_name
        self.profile = plan.profile
        self.transport = transport_for(target_for(self.profile))
        self.client = SlurmClient(self.transport)

    # -- remote layout ------------------------------------------------------------------------
    def base_dir(self) -> str:
        key = (self.transport.target, self.profile.paths.base_dir)
        if key not in _BASE_DIRS:
            # A login shell: sites define $DATA / $WORK in their profile scripts.
            expr = quote_path(self.profile.paths.base_dir)
            out = self.transport.run(f"bash -lc {shlex.quote(f'printf %s {expr}')}").stdout.strip()
            if not out.startswith("/"):
                raise dg.Failure(
                    f"paths.base_dir {self.profile.paths.base_dir!r} expanded to {out!r} on {self.profile.name}; "
                    "set it to an absolute path or a variable the login shell defines"
                )
            _BASE_DIRS[key] = out
        return _BASE_DIRS[key]

    def _make_job_dir(self, attempt: int) -> str:
        base = self.base_dir()
        run_dir = f"{base}/jobs/{self.context.run.run_id}"
        job_dir = f"{run_dir}/{self.op_name}-{attempt}"
        q = shlex.quote
        self.transport.run(
            f"umask 077; mkdir -p {q(base)}/jobs && chmod 700 {q(base)}/jobs && mkdir -p {q(run_dir)} && "
            f"rm -rf {q(job_dir)} && mkdir -m 700 {q(job_dir)} && tar -xzf - -C {q(job_dir)}",
            stdin=_workloads_tar(self.project_root / "workloads"),
        )
        return job_dir

    # -- attach or submit ---------------------------------------------------------------------
    def _previous_job(self) -> SubmittedJob | None:
        run = self.context.run
        instance = self.context.instance
        for run_id in (run.run_id, run.parent_run_id, run.root_run_id):
            if not run_id:
                continue
            other = run if run_id == run.run_id else instance.get_run_by_id(run_id)
            value = other.tags.get(TAG_PREFIX + self.op_name) if other else None
            job = SubmittedJob.from_tag(value) if value else None
            if job and job.cluster == self.profile.name:
                state = self.client.queue_state(job.job_id)
                if state and state.state in ACTIVE:
                    return job
        return None

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
        previous = self._previous_job() if attempt == 1 else None
        base = self.base_dir()
        if previous:
            job_dir = previous.job_dir
            log.info(f"re-attaching to Slurm job {previous.job_id} on {self.profile.name} (still {self.client.queue_state(previous.job_id).state})")
        else:
            environments.prepare(self.profile, self.project_root, self.transport, base)
            job_dir = self._make_job_dir(attempt)
        reader = RemoteFileMessageReader(self.transport, job_dir)
        injector = RemoteFileContextInjector(self.transport, f"{job_dir}/pipes-context.json")
        with dg.open_pipes_session(context=self.context.op_execution_context, context_injector=injector, message_reader=reader) as session:
            if previous:
                job = previous
            else:
                job = self._submit(job_dir, session.get_bootstrap_env_vars())
            reader.job_id = job.job_id
            try:
                state = self._wait(job)
            except BaseException:
                # Run terminated in Dagster (or the process is going down): leave nothing running.
                log.warning(f"cancelling Slurm job {job.job_id}")
                self.client.cancel(job.job_id)
                raise
        record = self.client.accounting(job.job_id)
        final_state = record.state if record else state
        exit_code = record.exit_code if record else self._exit_marker(job_dir)
        if record is None and final_state == "UNKNOWN" and exit_code == 0:
            # No accounting, but the script itself recorded a clean exit: that is evidence, not a guess.
            final_state = "COMPLETED"
            log.warning(f"no accounting record for job {job.job_id}; success taken from its exit-code file")
        metadata = job_metrics(record) if record else {"slurm_job_id": job.job_id, "slurm_state": final_state}
        metadata |= {"cluster": self.profile.name, "job_dir": job_dir, "attempt": attempt}
        if final_state in SUCCESS and exit_code == 0:
            results = list(session.get_results(metadata=_metadata(metadata)))
            yield from results
            yield from unreported_checks(self.context, results)
            return None
        if final_state in self.policy.retry_states and attempt < self.policy.max_attempts:
            return final_state
        cause = FAILURE_CAUSES.get(final_state, "Slurm reported a state this tool does not treat as success")
        stderr = "\n".join(reader.stderr_tail)
        raise dg.Failure(
            description=(
                f"Slurm job {job.job_id} on {self.profile.name} ended {final_state} (exit code {exit_code}): {cause}\n"
                f"job dir: {job_dir}\n--- last {len(reader.stderr_tail)} lines of stderr ---\n{stderr}"
            ),
            metadata=_metadata({**metadata, "stderr_tail": stderr, "exit_code": exit_code if exit_code is not None else -1}),
        )

    def _submit(self, job_dir: str, pipes_env: dict[str, str]) -> SubmittedJob:
        runtime = environments.activation(self.profile, self.project_root, self.base_dir())
        secrets = {name: os.environ.get(name) for name in self.plan.job.forward_env}
        missing = [name for name, value in secrets.items() if value is None]
        if missing:
            raise dg.Failure(f"forward_env names {', '.join(missing)}, which are not set in Dagster's environment")
        if secrets:
            self.transport.put("".join(f"{k}={shlex.quote(v)}\n" for k, v in secrets.items()).encode(), f"{job_dir}/.hpc-secrets")
            runtime = replace(runtime, secrets_file=".hpc-secrets")
        runtime = replace(runtime, env=tuple(pipes_env.items()))
        plan = plan_job(self.profile, self.plan.job, strict=True, runtime=runtime)
        script = render_script(plan, self.project_root / "clusters")
        self.transport.put(script.encode(), f"{job_dir}/job.sh", mode=0o700)
        try:
            job_id = self.client.submit(job_dir)
        except SubmissionError as exc:
            raise dg.Failure(f"sbatch on {self.profile.name} refused the job: {exc}\njob dir: {job_dir}") from None
        job = SubmittedJob(self.profile.name, job_id, job_dir)
        self.context.instance.add_run_tags(self.context.run.run_id, {TAG_PREFIX + self.op_name: job.tag()})
        self.context.log.info(f"submitted Slurm job {job_id} on {self.profile.name} ({job_dir})")
        return job

    def _wait(self, job: SubmittedJob) -> str:
        """Poll until the job leaves the active states; log every transition."""
        log = self.context.log
        limit_s = self.plan.time_limit_s
        started_pending = time.monotonic()
        started_running: float | None = None
        last: tuple[str, str] | None = None
        polls = 0
        while True:
            state = self.client.queue_state(job.job_id)
            if state is None:
                return "UNKNOWN"  # gone from squeue: accounting decides
            if (state.state, state.reason) != last:
                if state.state == "PENDING":
                    log.info(f"job {job.job_id} PENDING ({state.reason})")
                elif state.state == "RUNNING":
                    log.info(f"job {job.job_id} RUNNING on {state.nodes}")
                else:
                    log.info(f"job {job.job_id} {state.state}" + (f" ({state.reason})" if state.reason not in ("", "None") else ""))
                last = (state.state, state.reason)
            if state.state not in ACTIVE:
                return state.state
            now = time.monotonic()
            if state.state == "RUNNING" and started_running is None:
                started_running = now
            if started_running is None and now - started_pending > self.policy.queue_timeout_s:
                self.client.cancel(job.job_id)
                raise dg.Failure(f"job {job.job_id} waited in the queue longer than {self.policy.queue_timeout_s}s ({state.reason}); cancelled")
            if started_running is not None and limit_s and now - started_running > limit_s + RUN_GRACE_S:
                self.client.cancel(job.job_id)
                raise dg.Failure(f"job {job.job_id} still {state.state} {RUN_GRACE_S}s past its {limit_s}s limit; cancelled")
            time.sleep(min(POLL_SCHEDULE_S[min(polls, len(POLL_SCHEDULE_S) - 1)], self.policy.max_poll_interval_s))
            polls += 1

    def _exit_marker(self, job_dir: str) -> int | None:
        result = self.transport.run(f"cat {shlex.quote(job_dir)}/.hpc-exit-code 2>/dev/null", check=False)
        return int(result.stdout.strip()) if result.stdout.strip().lstrip("-").isdigit() else None


def _metadata(values: dict[str, object]) -> dict[str, dg.MetadataValue]:
    out: dict[str, dg.MetadataValue] = {}
    for key, value in values.items():
        if isinstance(value, bool):
            out[key] = dg.MetadataValue.bool(value)
        elif isinstance(value, int):
            out[key] = dg.MetadataValue.int(value)
        elif isinstance(value, float):
            out[key] = dg.MetadataValue.float(value)
        elif value is None:
            continue
        else:
            out[key] = dg.MetadataValue.text(str(value))
    return out
