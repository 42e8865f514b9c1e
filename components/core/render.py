"""Job scripts from cluster profiles: every directive traceable to the setting that produced it.

The renderer is pure: it needs a profile and a job description, never a connection, so the exact
script an asset would submit can be previewed anywhere (like dask-jobqueue's job_script()).
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Literal

import jinja2
from markupsafe import Markup

from components.core import shell
from components.core.errors import ConfigError
from components.core.profiles import TEMPLATES_DIR, ClusterProfile
from components.core.resources import JobResources, describe, place
from components.core.units import format_mem, format_time

Launcher = Literal["python", "bash", "ray"]
WORKLOADS_DIR = "workloads"
# Helpers for workloads (components/runtime) travel into every job directory under this name and
# are on the job's PYTHONPATH: `from hpc_runtime.job import FeatureJob`.
RUNTIME_PACKAGE = "hpc_runtime"
RUNTIME_DIR = Path(__file__).resolve().parent.parent / "runtime"


@dataclass(frozen=True)
class JobSpec:
    """What to run, independent of where: the component translates its YAML into this."""

    name: str
    assets: tuple[str, ...]
    workload: PurePosixPath  # relative to the project's workloads/ directory
    launcher: Launcher = "python"
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    forward_env: tuple[str, ...] = ()
    resources: JobResources = field(default_factory=JobResources)
    # launcher "ray": the Ray object store size per node, in bytes (None: Ray's default share).
    ray_object_store_bytes: int | None = None
    # Python packages the job's environment must import (checked on the login node before the first job).
    imports: tuple[str, ...] = ()
    # (tasks, at most this many at once): a Slurm job array, one task per partition key; each task
    # sources tasks/<index>/task.env (its key and Pipes channel) and writes its output there.
    array: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        for name, _ in self.env:
            shell.check_env_name(name)
        for name in self.forward_env:
            shell.check_env_name(name)
        if self.workload.is_absolute() or ".." in self.workload.parts:
            raise ValueError(f"workload {self.workload} must be a path inside {WORKLOADS_DIR}/")


@dataclass(frozen=True)
class Directive:
    option: shell.ShellSafe
    source: str


@dataclass(frozen=True)
class Runtime:
    """What the execution environment adds at run time; previews use the same, minus Pipes values."""

    python: str | None = None  # replaces the profile's interpreter (a venv's python, say)
    setup: tuple[shell.ShellSafe, ...] = ()  # activation lines, already quoted
    launch_prefix: tuple[shell.ShellSafe, ...] = ()  # e.g. apptainer exec <image>
    env: tuple[tuple[str, str], ...] = ()  # e.g. Pipes bootstrap variables
    secrets_file: str | None = None  # sourced then deleted by the script; holds forward_env values
    # Inside a run-scoped allocation: the `srun ...` that makes the workload its own job step
    # (components.core.allocation.srun_prefix); it replaces the multi-task srun.
    step_srun: shell.ShellSafe | None = None


@dataclass(frozen=True)
class JobPlan:
    """Everything the template needs, computed and validated in Python."""

    profile: ClusterProfile
    job: JobSpec
    directives: tuple[Directive, ...]
    notes: tuple[str, ...]
    launch: shell.ShellSafe
    warnings: tuple[str, ...] = ()
    runtime: Runtime = Runtime()
    time_limit_s: int | None = None  # what --time asks for; None when no limit is rendered


def array_directive(tasks: int, max_concurrent: int) -> str:
    """`--array=0-(N-1)%K` for N tasks, at most K running at once (K capped at N). Raises ValueError for N < 1 or K < 1."""
    if tasks < 1 or max_concurrent < 1:
        raise ValueError(f"an array needs at least one task and one at a time (got {tasks}, {max_concurrent})")
    return f"--array=0-{tasks - 1}%{min(tasks, max_concurrent)}"


def _directives(
    profile: ClusterProfile, job: JobSpec, strict: bool
) -> tuple[list[Directive], list[str], list[str], int | None]:
    assert profile.slurm is not None
    res, slurm = job.resources, profile.slurm
    placement = place(profile, res)
    pclass, cpath = placement.pclass, ("slurm", "partitions", placement.class_name)
    omitted = set(pclass.omit_directives)
    out: list[Directive] = []
    notes: list[str] = []
    warnings: list[str] = []

    def add(option: str, source: str) -> None:
        out.append(Directive(shell.check_directive(option), source))

    def skip(name: str, value: str, why: str) -> None:
        notes.append(f"--{name}={value} requested but not set: {why}")

    add(f"--job-name={shell.job_name(job.name)}", f"asset {', '.join(job.assets)}")
    # Relative to the job directory, where the script is submitted from: no path is baked in.
    if job.array is None:
        add("--output=slurm-%j.out", "job directory layout")
        add("--error=slurm-%j.err", "job directory layout")
    else:
        # One directory per array task: its output, its Pipes channel, its exit code.
        add(array_directive(*job.array), "partitions (one task per partition key) and submission.max_concurrent")
        add("--output=tasks/%a/slurm-%A_%a.out", "job directory layout (array task)")
        add("--error=tasks/%a/slurm-%A_%a.err", "job directory layout (array task)")
    add("--open-mode=append", "job directory layout (a requeued job adds to its output instead of erasing it)")
    add(f"--partition={res.partition or pclass.partition}",
        "resources.partition" if res.partition else profile.source(*cpath, "partition"))
    qos = res.qos or pclass.qos
    if qos and "qos" not in omitted:
        add(f"--qos={qos}", "resources.qos" if res.qos else profile.source(*cpath, "qos"))
    account = res.account or profile.account()
    if account and "account" not in omitted:
        if res.account:
            source = "resources.account"
        else:
            name = profile.account_source()
            if name is None:
                source = profile.source("slurm", "account")
            elif name == slurm.account_env:
                source = f"${name} ({profile.source('slurm', 'account_env')})"
            else:
                source = f"${name} (pyproject.toml tool.hpc.account_env)"
        add(f"--account={account}", source)
    elif slurm.account_required:
        hint = "set " + " or ".join(f"${n}" for n in profile.account_envs()) if profile.account_envs() else "set slurm.account"
        if strict:
            raise ConfigError(
                f"cluster {profile.name!r} requires a project account and none is set",
                fix=f"{hint}, or set resources.account on the asset",
            )
        warnings.append(f"no account set for {profile.name}: {hint} before submitting")
        notes.append(f"--account is required on {profile.name} but not set here: {hint}")
    if res.nodes > 1 or pclass.nodes_directive == "always":
        if "nodes" in omitted:
            skip("nodes", str(res.nodes), f"{profile.source(*cpath, 'omit_directives')}")
        else:
            add(f"--nodes={res.nodes}", "resources.nodes")
    else:
        notes.append(f"--nodes left out for a single-node job ({profile.source(*cpath, 'nodes_directive')})")
    if "ntasks" not in omitted:
        add(f"--ntasks={res.total_tasks}", "resources.ntasks" if res.ntasks else "resources.nodes (one task per node)")
    if "cpus-per-task" not in omitted:
        add(f"--cpus-per-task={res.cpus_per_task}", "resources.cpus_per_task")
    if res.mem_mb is not None:
        if "mem" in omitted:
            skip("mem", format_mem(res.mem_mb), f"{profile.name} rejects it here ({profile.source(*cpath, 'omit_directives')})")
            warnings.append(f"mem={format_mem(res.mem_mb)} is not requested on {profile.name}/{placement.class_name}")
        else:
            add(f"--mem={format_mem(res.mem_mb)}", "resources.mem")
    if res.gpus > 0:
        add(slurm.gpu_directive.format(gpus=res.gpus), f"resources.gpus via {profile.source('slurm', 'gpu_directive')}")
    if "time" not in omitted:
        add(f"--time={format_time(placement.time_s)}", placement.time_source)
    if res.exclusive:
        add("--exclusive", "resources.exclusive")
    for i, extra in enumerate(slurm.extra_directives):
        add(extra, profile.source("slurm", "extra_directives", i))
    for i, extra in enumerate(pclass.extra_directives):
        add(extra, profile.source(*cpath, "extra_directives", i))
    for extra in res.extra_directives:
        add(extra, "resources.extra_directives")
    return out, notes, warnings, (None if "time" in omitted else placement.time_s)


def _launch(profile: ClusterProfile, job: JobSpec, runtime: Runtime) -> shell.ShellSafe:
    script = PurePosixPath(WORKLOADS_DIR) / job.workload
    if job.launcher in ("python", "ray"):
        python = runtime.python or profile.environment.python
        exe = sys.executable if python == "current" else python
        argv = [*runtime.launch_prefix, shell.quote(exe), "-u", shell.quote(str(script))]
    else:
        argv = [*runtime.launch_prefix, "bash", shell.quote(str(script))]
    argv += [shell.quote(a) for a in job.args]
    command = " ".join(argv)
    if runtime.step_srun is not None:
        return shell.ShellSafe(f"{runtime.step_srun} {command}")
    # A Ray driver runs once, in the batch script; the Ray nodes are the job's tasks.
    if profile.scheduler == "slurm" and job.resources.total_tasks > 1 and job.launcher != "ray":
        srun = " ".join(["srun", *(profile.slurm.srun_args if profile.slurm else [])])
        command = f"{srun} {command}"
    return shell.ShellSafe(command)


def plan_job(profile: ClusterProfile, job: JobSpec, *, strict: bool = False, runtime: Runtime | None = None) -> JobPlan:
    """Validate the job against the profile and compute directives; strict=True is for submission."""
    if profile.scheduler == "slurm":
        directives, notes, warnings, time_limit_s = _directives(profile, job, strict)
    else:
        directives, warnings, time_limit_s = [], [], None
        notes = [f"resources recorded, not enforced locally: {describe(job.resources)}"]
    runtime = runtime or Runtime()
    launch = _launch(profile, job, runtime)
    return JobPlan(profile, job, tuple(directives), tuple(notes), launch, tuple(warnings), runtime, time_limit_s)


def _finalize(value: object) -> object:
    # Anything not already made safe is quoted: a template cannot leak a raw YAML value into the shell.
    # Markup covers ShellSafe and the output of super() and blocks under autoescape.
    if isinstance(value, Markup):
        return value
    if value is None:
        return shell.ShellSafe("")
    if isinstance(value, bool | int | float):
        return shell.ShellSafe(str(value))
    return shell.quote(value)


def _comment(value: object) -> shell.ShellSafe:
    return shell.ShellSafe(" ".join(str(value).split()))


def template_environment(clusters_dir: Path) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(Path(clusters_dir) / TEMPLATES_DIR)),
        undefined=jinja2.StrictUndefined,
        finalize=_finalize,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        # Autoescape is on only so that "safe" marks survive blocks; _finalize quotes for the shell,
        # which leaves nothing for HTML escaping to touch.
        autoescape=True,
    )
    env.filters["comment"] = _comment
    env.filters["q"] = shell.quote
    env.filters["path"] = shell.quote_path
    return env


def _data_dir(profile: ClusterProfile, project_root: Path) -> shell.ShellSafe:
    data_dir = profile.paths.effective_data_dir()
    if profile.scheduler == "local" and not data_dir.startswith(("/", "$", "~")):
        data_dir = str((project_root / data_dir).resolve())
    return shell.quote_path(data_dir)


def _ray_context(plan: JobPlan) -> dict | None:
    """What the Ray bring-up needs; None unless a Slurm job uses launcher: ray (locally the driver starts Ray)."""
    if plan.job.launcher != "ray" or plan.profile.scheduler != "slurm":
        return None
    ray, res = plan.profile.ray, plan.job.resources
    return {
        "nodes": res.nodes,
        "gpus": res.gpus,
        "object_store_bytes": plan.job.ray_object_store_bytes,
        "setup": [shell.ShellSafe(line) for line in ray.setup],
        "srun_args": shell.ShellSafe(" ".join((*(plan.profile.slurm.srun_args if plan.profile.slurm else ()), *ray.srun_args))),
        "temp_root": shell.quote_path(ray.temp_root),
        "port_base": ray.port_base,
        "start_timeout_s": ray.start_timeout_s,
        "source": _comment(plan.profile.source("ray")),
    }


def render_script(plan: JobPlan, clusters_dir: Path) -> str:
    profile, job = plan.profile, plan.job
    environment = profile.environment
    context = {
        "profile": {
            "name": profile.name,
            "description": _comment(profile.description),
            "source": _comment(profile.source()),
        },
        "job": {
            "name": shell.job_name(job.name),
            "assets": [_comment(a) for a in job.assets],
            "workload": _comment(job.workload),
            "launcher": job.launcher,
        },
        "directives": plan.directives,
        "notes": [_comment(n) for n in plan.notes],
        "module_purge": environment.module_purge,
        "modules": [shell.ShellSafe(m) for m in environment.modules],
        "setup": [*(shell.ShellSafe(line) for line in environment.setup), *plan.runtime.setup],
        "env": [
            (shell.ShellSafe(shell.check_env_name(k)), shell.quote(v))
            for k, v in (*environment.env.items(), *job.env, *plan.runtime.env)
        ],
        "secrets_file": shell.quote(plan.runtime.secrets_file) if plan.runtime.secrets_file else None,
        "forward_env": [shell.ShellSafe(n) for n in job.forward_env],
        "data_dir": _data_dir(profile, Path(clusters_dir).parent),
        "launch": plan.launch,
        "ray": _ray_context(plan),
        "array": job.array is not None and profile.scheduler == "slurm",
    }
    try:
        template = template_environment(clusters_dir).get_template(profile.template)
        text = template.render(**context)
        # Blocks left empty by a profile leave runs of blank lines; keep the script readable.
        return re.sub(r"\n{3,}", "\n\n", text)
    except jinja2.TemplateError as exc:
        lineno = getattr(exc, "lineno", None)
        name = getattr(exc, "filename", None) or profile.template
        raise ConfigError(
            f"template error: {exc.message if hasattr(exc, 'message') else exc}",
            fix="correct the Jinja template; the variables it may use are listed in clusters/README.md",
            location=None,
        ).at(_template_location(clusters_dir, name, lineno)) from None


def _template_location(clusters_dir: Path, name: str, line: int | None):
    from components.core.errors import Location

    path = Path(name)
    if not path.is_absolute():
        path = Path(clusters_dir) / TEMPLATES_DIR / name
    return Location(file=path, line=line)
