"""Local execution: run a rendered job script as a subprocess of the Dagster step, through Pipes.

The same script a cluster would receive runs here (without #SBATCH), so modules, environment and
launch line are exercised on a laptop. Logs, metadata and check results come back through Pipes;
a failing workload fails the step with its exit code and the tail of its stderr.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path

import dagster as dg

from components.core.render import RUNTIME_DIR, RUNTIME_PACKAGE
from components.core.reported import declared_results
from components.core.run_metadata import NOT_SLURM, local_values, not_available, run_metadata
from components.core.tail import StderrTail, cap_line

STDERR_TAIL_LINES = 40
KEEP_JOB_DIRS_ENV = "HPC_KEEP_JOB_DIRS"


def make_job_dir(root: Path, name: str) -> Path:
    """A private (0700) directory for one run of one step."""
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    job_dir = root / name
    suffix = 0
    while True:
        candidate = job_dir if suffix == 0 else root / f"{name}-{suffix}"
        try:
            candidate.mkdir(mode=0o700)
            break
        except FileExistsError:
            suffix += 1
    os.chmod(candidate, 0o700)  # mkdir's mode is filtered by the umask
    return candidate


def _pump(stream, tail: StderrTail, sink) -> None:
    for raw in iter(stream.readline, b""):
        line = raw.decode("utf-8", errors="replace").rstrip("\n")
        tail.append(line)
        sink.write(cap_line(line) + "\n")
        sink.flush()
    stream.close()


def _wait(proc: subprocess.Popen) -> tuple[int, object | None]:
    """(exit status, rusage of the script's process tree): what cpu_efficiency and max_rss_mb are made of."""
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    except ChildProcessError:  # reaped elsewhere: the status is still Popen's to give
        return proc.wait(), None
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage


def _stop(proc: subprocess.Popen, grace_s: float = 5.0) -> None:
    """Terminate the whole process group: the workload may have started children."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass


def run_script(
    context: dg.AssetExecutionContext,
    *,
    script: str,
    job_dir: Path,
    workloads_dir: Path,
    env: Mapping[str, str],
    metadata: Mapping[str, object],
    cpus: int = 1,
    context_injector: dg.PipesContextInjector | None = None,
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    """Run `script` in `job_dir` through Pipes; yield the workload's results with the run's metadata.

    metadata: the plan's values (components.core.run_metadata.plan_values); cpus: the CPUs the asset
    requests, the denominator of cpu_efficiency. context_injector: how the Pipes context reaches the
    workload (default a temp file; one partition's task narrows it, components.core.partition_runs). Raises dg.Failure on a non-zero exit, and on results
    the definition does not declare (components.core.reported).
    """
    script_path = job_dir / "job.sh"
    script_path.write_text(script, encoding="utf-8")
    script_path.chmod(0o700)
    (job_dir / "workloads").symlink_to(workloads_dir.resolve(), target_is_directory=True)
    (job_dir / RUNTIME_PACKAGE).symlink_to(RUNTIME_DIR, target_is_directory=True)

    tail = StderrTail(STDERR_TAIL_LINES)
    # Pipes flags one of its own internals as a preview feature; the warning means nothing to users.
    warnings.filterwarnings("ignore", category=dg.PreviewWarning, module="dagster._core.pipes")
    with dg.open_pipes_session(
        context=context.op_execution_context,
        context_injector=context_injector or dg.PipesTempFileContextInjector(),
        message_reader=dg.PipesTempFileMessageReader(),
    ) as session:
        proc_env = {**os.environ, **env, **session.get_bootstrap_env_vars(), "PYTHONUNBUFFERED": "1"}
        started = time.monotonic()
        proc = subprocess.Popen(
            ["bash", str(script_path)],
            cwd=job_dir,
            env=proc_env,
            stdin=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        pump = threading.Thread(target=_pump, args=(proc.stderr, tail, sys.stderr), daemon=True)
        pump.start()
        try:
            returncode, usage = _wait(proc)
        except BaseException:
            # Run terminated from Dagster (or Ctrl-C): leave nothing running behind.
            _stop(proc)
            raise
        finally:
            pump.join(timeout=5)
        elapsed = time.monotonic() - started

    if returncode != 0:
        stderr_tail = tail.text()
        raise dg.Failure(
            description=(
                f"workload exited with code {returncode} after {elapsed:.1f}s (job dir {job_dir})\n"
                f"--- last {len(tail)} lines of stderr ---\n{stderr_tail}"
            ),
            metadata={
                "exit_code": returncode,
                "stderr_tail": dg.MetadataValue.text(stderr_tail),
                "job_dir": str(job_dir),
                **({"job_script": dg.MetadataValue.md(str(metadata["job_script"]))} if "job_script" in metadata else {}),
            },
        )
    values = {**metadata, **local_values(elapsed, usage, cpus, str(job_dir))}
    if not os.environ.get(KEEP_JOB_DIRS_ENV):
        shutil.rmtree(job_dir, ignore_errors=True)
        values["job_dir"] = not_available(f"removed after success; set {KEEP_JOB_DIRS_ENV}=1 to keep it")
    results = list(session.get_results(metadata=run_metadata(values, NOT_SLURM)))
    results = declared_results(context, results, str(metadata.get("workload", "the workload")))
    yield from results
    yield from unreported_checks(context, results)


def unreported_checks(
    context: dg.AssetExecutionContext, results: list
) -> Iterator[dg.AssetCheckResult]:
    """A declared check the workload never reported fails visibly instead of crashing the step."""
    reported = {
        dg.AssetCheckKey(r.asset_key, r.check_name)
        for r in results
        if isinstance(r, dg.AssetCheckResult) and r.asset_key is not None and r.check_name
    }
    for key in sorted(context.selected_asset_check_keys - reported, key=str):
        context.log.warning(f"workload did not report check {key.name!r} on {key.asset_key.to_user_string()}")
        yield dg.AssetCheckResult(
            asset_key=key.asset_key,
            check_name=key.name,
            passed=False,
            metadata={"error": "the workload did not report this check (pipes.report_asset_check)"},
        )
