"""WorkloadComponent: the attributes and hooks shared by every component that runs a workload script.

SlurmAssetComponent, MetaxyFeatureComponent and RayDoclingComponent subclass it; it only translates
YAML into calls on components.core (profile loading, job planning, script rendering, execution).
"""

from __future__ import annotations

import datetime
import functools
import sys
import typing
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path, PurePosixPath
from typing import Annotated, Literal

import dagster as dg
from pydantic import BaseModel

from components.core import attribute_schema, environments, shell
from components.core.errors import ConfigError, Location
from components.core.imports import workload_imports
from components.core.local import make_job_dir, run_script
from components.core.profiles import ClusterProfile, load_profile, resolve_cluster_name
from components.core.allocation import MODE_TAG, NEEDS_TAG, need_of
from components.core.allocation import preview as allocation_preview
from components.core.job_record import RemotePolicy
from components.core import partition_runs
from components.core.array_run import ArrayRun
from components.core.partition_local import run_partitions_locally
from components.core.partitions import partitions_definition, preview_keys
from components.core.project import load_settings
from components.core.remote import SlurmRun
from components.core.render import WORKLOADS_DIR, JobPlan, JobSpec, plan_job, render_script
from components.core.resources import JobResources, ResourceError
from components.core.run_metadata import plan_values
from components.core.units import parse_time_s
from components.core.yamlio import KeyPath, LineMap, load_yaml

CLUSTERS_DIR = "clusters"
LOCAL_JOBS_DIR = ".hpc/jobs"


def _doc(description: str, *examples: object) -> dg.Resolver:
    return dg.Resolver.default(description=description, examples=list(examples) or None)


class SlurmResources(dg.Resolvable, dg.Model):
    """Slurm resources; each field becomes one #SBATCH directive (see `hpc render`)."""

    nodes: Annotated[int, _doc("Number of nodes (--nodes).", 1, 2)] = 1
    ntasks: Annotated[int | None, _doc("Total tasks (--ntasks); default one per node. >1 launches with srun.", 4)] = None
    cpus_per_task: Annotated[int, _doc("CPU cores per task (--cpus-per-task).", 4)] = 1
    mem: Annotated[str | int | None, _doc("Memory per node (--mem): a number with K/M/G/T; bare numbers are MB.", "8G", "500M")] = None
    gpus: Annotated[int, _doc("GPUs per node, rendered with the profile's gpu_directive (--gres=gpu:N).", 0, 1)] = 0
    time: Annotated[str | int | None, _doc("Wall time limit (--time): MM, HH:MM:SS or D-HH:MM:SS. Default: the profile's.", "00:30:00", "1-00:00:00")] = None
    partition_class: Annotated[
        str | None, _doc("Resource class of the cluster profile (cpu, gpu, debug, ...). Default: gpu if gpus > 0, else cpu.", "debug")
    ] = None
    partition: Annotated[str | None, _doc("Override the partition the class maps to.", "boost_usr_prod")] = None
    qos: Annotated[str | None, _doc("Override the QoS the class maps to.", "boost_qos_dbg")] = None
    account: Annotated[str | None, _doc("Override the project account (normally from the profile's account_env).", "p71234")] = None
    exclusive: Annotated[bool, _doc("Request whole nodes (--exclusive).")] = False
    extra_directives: Annotated[
        list[str], _doc("Further sbatch options, one per item, as --name=value.", ["--constraint=a100"])
    ] = []



class TimeWindowPartitions(dg.Resolvable, dg.Model):
    """A daily or hourly partition window."""

    start: Annotated[str, _doc("First partition: YYYY-MM-DD (daily) or YYYY-MM-DD-HH:MM (hourly); quote it in YAML.", "2026-01-01")]
    end: Annotated[str | None, _doc("End of the last window (exclusive); default: windows up to now.", "2026-02-01")] = None
    timezone: Annotated[str | None, _doc("IANA time zone of the windows; default UTC.", "Europe/Vienna")] = None


class PartitionsSpec(dg.Resolvable, dg.Model):
    """Partitions of the assets; give exactly one kind. A backfill of N partitions is one run, and on
    Slurm one job array of N tasks (at most submission.max_concurrent at once), one per partition key."""

    static: Annotated[list[str | int] | None, _doc("Fixed partition keys.", ["north", "south"])] = None
    daily: Annotated[TimeWindowPartitions | None, _doc("One partition per day.", {"start": "2026-01-01"})] = None
    hourly: Annotated[TimeWindowPartitions | None, _doc("One partition per hour.", {"start": "2026-01-01-00:00"})] = None
    dynamic: Annotated[str | None, _doc("Name of a dynamic partitions set (keys added at run time by sensors or the UI).", "samples")] = None

    def definition(self) -> dg.PartitionsDefinition:
        """Raises ConfigError naming the key (partitions.daily.start, ...)."""
        def window(value):
            return None if value is None else {"start": value.start, "end": value.end, "timezone": value.timezone}

        return partitions_definition(static=self.static, daily=window(self.daily), hourly=window(self.hourly),
                                     dynamic=self.dynamic)


class SubmissionPolicy(dg.Resolvable, dg.Model):
    """How a Slurm job is followed and when it is resubmitted."""

    retry_states: Annotated[
        list[Literal["NODE_FAIL", "PREEMPTED"]],
        _doc("Terminal states after which the job is resubmitted automatically.", ["NODE_FAIL", "PREEMPTED"]),
    ] = []
    max_attempts: Annotated[int, _doc("Submissions in total, counting the first.", 3)] = 1
    queue_timeout: Annotated[str, _doc("Longest wait in the queue before the job is cancelled and the step fails.", "2-00:00:00")] = "7-00:00:00"
    max_poll_interval_s: Annotated[float, _doc("Upper bound of the adaptive squeue polling interval.", 30)] = 10.0
    outage_tolerance: Annotated[
        str,
        _doc("How long contact with the login node or the Slurm controller may stay lost (reboot, restart, timeouts) "
             "before the step gives up; the job is never cancelled or failed for it, and re-executing re-attaches.",
             "01:00:00"),
    ] = "00:30:00"
    max_concurrent: Annotated[
        int, _doc("Partitioned assets: how many partitions of one run compute at once (the K of sbatch --array=0-(N-1)%K; "
                  "locally, processes at once).", 8)
    ] = 8
    allocation: Annotated[
        Literal["job", "run"] | None,
        _doc("job: this step is a Slurm job of its own. run: the steps of one Dagster run on the same cluster share one "
             "allocation (sized from their resources, or allocation_resources), each running as its own srun job step; "
             "it ends when they are done. Default: [tool.hpc] allocation in pyproject.toml, else job.", "run"),
    ] = None
    allocation_resources: Annotated[
        SlurmResources | None,
        _doc("Explicit shape of the run's allocation (nodes, cpus_per_task = cores per node, mem, gpus, time) instead of "
             "sizing it from the run's steps.", {"cpus_per_task": 8, "mem": "16G", "time": "04:00:00"}),
    ] = None
    allocation_idle_timeout: Annotated[
        str,
        _doc("How long the run's allocation stays with no step running and no word from Dagster before it ends itself "
             "(a dead or finished orchestrator burns no node-hours).", "00:05:00"),
    ] = "00:02:00"


class WorkloadComponent(dg.Component, dg.Resolvable, dg.Model):
    """The attributes and hooks shared by components that run a workload locally or on Slurm.

    Subclasses say which assets the job materializes (`asset_keys`) and build their definitions;
    everything about where and how the workload runs lives here.
    """

    script: Annotated[str, _doc("Workload path relative to workloads/.", "draw_numbers.py", "preprocess/clean.sh")]
    args: Annotated[list[str | int | float], _doc("Arguments passed to the workload, each shell-quoted.", ["--rows", "1000"])] = []
    env: Annotated[
        dict[str, str | int | float | bool], _doc("Environment variables exported in the job script (never put secrets here).", {"OMP_NUM_THREADS": "4"})
    ] = {}
    forward_env: Annotated[
        list[str], _doc("Names of variables passed from Dagster's environment at run time, never written to the script: use for secrets.", ["HF_TOKEN"])
    ] = []
    launcher: Annotated[Literal["python", "bash"], _doc("How the workload is started.", "python", "bash")] = "python"
    resources: Annotated[SlurmResources, _doc("Slurm resources for the job.")] = SlurmResources()
    submission: Annotated[SubmissionPolicy, _doc("Polling, queue timeout and the retry policy for Slurm jobs.")] = SubmissionPolicy()
    cluster: Annotated[
        str | None, _doc("Cluster profile in clusters/ (local, docker, vsc5, leonardo, musica). Default: $HPC_CLUSTER, else [tool.hpc] cluster in pyproject.toml, else local. $HPC_FORCE_CLUSTER (the project's tests set it to local) wins over it.", "leonardo")
    ] = None
    name: Annotated[str | None, _doc("Op name; default derived from the first asset key.", "numbers_job")] = None
    requirements: Annotated[
        str | None, _doc("Locked requirements of this workload's job environment, for profiles that build a venv; default the profile's.",
                         "workloads/requirements-gpu.txt")
    ] = None

    @classmethod
    def get_model_cls(cls):
        """dagster's attribute model, whose JSON schema (dg check yaml, editors) reports nested mistakes by key."""
        return _sharpened(super().get_model_cls(), cls)

    @classmethod
    def load(cls, attributes, context: dg.ComponentLoadContext):
        # Every way of loading (dg, ComponentTree, the hpc CLI) gets our messages for YAML that dagster
        # would take silently changed (`args: [no]` as 0); definitions.py checks all files before this.
        from components.defs_check import combined, file_errors

        defs_file = Path(context.path) / "defs.yaml"
        error = combined(file_errors(defs_file)) if defs_file.is_file() else None
        if error is not None:
            raise error
        if attributes is None:  # dagster passes None for a missing, empty or `{}` attributes mapping
            raise _no_attributes(cls, defs_file)
        return super().load(attributes, context)

    # --- hooks -------------------------------------------------------------------------------

    def asset_keys(self) -> list[dg.AssetKey]:
        raise NotImplementedError

    @property
    def op_name(self) -> str:
        if self.name:
            return self.name
        return "__".join(self.asset_keys()[0].path).replace("-", "_")

    def get_job_spec(self, project_root: Path, extra_env: Sequence[tuple[str, str]] = ()) -> JobSpec:
        """Translate the YAML attributes into the core's job description."""
        self._check_env_names()
        res = self.resources
        return JobSpec(
            name=self.op_name,
            assets=tuple(key.to_user_string() for key in self.asset_keys()),
            workload=self._workload_path(project_root),
            launcher=self.launcher,
            args=tuple(str(a) for a in self.args),
            env=tuple((k, str(v)) for k, v in self.env.items()) + tuple(extra_env),
            forward_env=tuple(self.forward_env),
            imports=self.job_imports(project_root),
            resources=JobResources(
                nodes=res.nodes,
                ntasks=res.ntasks,
                cpus_per_task=res.cpus_per_task,
                mem=None if res.mem is None else str(res.mem),  # 500 as written: MB
                gpus=res.gpus,
                time=None if res.time is None else str(res.time),  # 30 as written: minutes
                partition_class=res.partition_class,
                partition=res.partition,
                qos=res.qos,
                account=res.account,
                exclusive=res.exclusive,
                extra_directives=tuple(res.extra_directives),
            ),
        )

    def job_imports(self, project_root: Path) -> tuple[str, ...]:
        """What the job's Python must import: dagster_pipes and the workload's own imports."""
        if self.launcher == "bash":
            return ()
        return (environments.PIPES, *workload_imports(project_root / WORKLOADS_DIR / self._workload_path(project_root)))

    def environment_imports(self, project_root: Path) -> tuple[str, ...]:
        """Everything the job environment must import for this component (the job's and the login node's)."""
        return self.job_imports(project_root)

    def get_profile(self, project_root: Path, cluster: str | None = None) -> ClusterProfile:
        try:
            # A command's own --cluster is a request for that profile; the asset's `cluster:` yields to $HPC_FORCE_CLUSTER.
            name = cluster or resolve_cluster_name(self.cluster, project_root)
            profile = load_profile(name, project_root / CLUSTERS_DIR)
        except ConfigError as exc:
            # Only a name without a source of its own came from this asset's `cluster:`.
            unplaced = exc.location.file is None and exc.location.variable is None
            raise exc.at(Location(key="cluster")) if unplaced else exc
        if self.requirements and profile.environment.strategy == "venv":
            if not (project_root / self.requirements).is_file():
                raise ConfigError(f"requirements file {self.requirements} does not exist",
                                  fix="give a path relative to the project root, such as workloads/requirements.txt",
                                  location=Location(key="requirements"))
            environment = profile.environment
            venv = environment.venv.model_copy(update={"requirements": self.requirements})
            profile = profile.model_copy(update={"environment": environment.model_copy(update={"venv": venv})})
        if self.resources.gpus:
            profile = environments.for_gpus(profile)
        return profile

    def plan(self, project_root: Path, cluster: str | None = None, *, strict: bool = False,
             extra_env: Sequence[tuple[str, str]] = ()) -> JobPlan:
        self.remote_policy(project_root)  # every component plans at load time: bad submission values surface there
        self.max_concurrent()
        self.partitions_def()
        return plan_job(self.get_profile(project_root, cluster), self.get_job_spec(project_root, extra_env), strict=strict)

    def render(self, project_root: Path, cluster: str | None = None, *, strict: bool = False) -> JobPlan:
        """Plan plus environment activation: what `hpc render` prints; connects to nothing."""
        profile = self.get_profile(project_root, cluster)
        spec = self.get_job_spec(project_root)
        array_note = None
        definition = self.partitions_def()
        if definition is not None and profile.scheduler == "slurm":
            keys, array_note = preview_keys(definition)
            spec = replace(spec, array=(max(1, len(keys)), self.max_concurrent()))
        if profile.scheduler != "slurm":
            return plan_job(profile, spec, strict=strict)
        if strict and environments.PIPES in spec.imports:
            environments.check_job_python(profile, project_root)
        plan = plan_job(profile, spec, strict=strict, runtime=environments.activation(profile, project_root))
        return replace(plan, notes=(*plan.notes, *environments.notes(profile), *((array_note,) if array_note else ())))

    def render_in_allocation(self, project_root: Path, plan: JobPlan, *, strict: bool = False) -> tuple[JobPlan, str | None]:
        """`hpc render` with submission.allocation: run: the step's plan with its srun line, and the
        allocation's script; (plan, None) when the step is a job of its own."""
        policy = self.remote_policy(project_root)
        if plan.profile.scheduler != "slurm" or policy.allocation != "run" or plan.job.array:
            return plan, None
        return allocation_preview(plan, self.op_name, project_root / CLUSTERS_DIR, idle_timeout_s=policy.allocation_idle_timeout_s,
                                  abandon_s=policy.outage_tolerance_s, explicit=policy.allocation_resources, strict=strict)

    def remote_policy(self, project_root: Path | None = None) -> RemotePolicy:
        """The submission attributes as the core's policy ([tool.hpc] of project_root fills `allocation`).
        Raises ConfigError naming the key at fault."""
        times = {}
        for key in ("queue_timeout", "outage_tolerance", "allocation_idle_timeout"):
            try:
                times[key] = parse_time_s(getattr(self.submission, key))
            except ValueError as exc:
                raise ConfigError(str(exc), fix="write a Slurm time such as 00:30:00 or 1-00:00:00",
                                  location=Location(key=f"submission.{key}")) from None
        return RemotePolicy(
            queue_timeout_s=times["queue_timeout"],
            max_poll_interval_s=self.submission.max_poll_interval_s,
            retry_states=tuple(self.submission.retry_states),
            max_attempts=max(1, self.submission.max_attempts),
            outage_tolerance_s=times["outage_tolerance"],
            allocation=self.submission.allocation or load_settings(project_root).allocation or "job",
            allocation_idle_timeout_s=times["allocation_idle_timeout"],
            allocation_resources=self._allocation_resources(),
        )

    def _allocation_resources(self) -> JobResources | None:
        shape = self.submission.allocation_resources
        if shape is None:
            return None
        try:
            return JobResources(nodes=shape.nodes, cpus_per_task=shape.cpus_per_task,
                                mem=None if shape.mem is None else str(shape.mem), gpus=shape.gpus,
                                time=None if shape.time is None else str(shape.time))
        except ResourceError as exc:
            raise ConfigError(str(exc), location=Location(key=f"submission.allocation_resources.{exc.field}")) from None

    def op_tags(self, plan: JobPlan, project_root: Path) -> dict[str, str]:
        """The op's tags: its cluster and, when it asks for the run's allocation, what it needs of it
        (read by the step of the run that sizes the allocation)."""
        tags = {"hpc/cluster": plan.profile.name}
        if plan.profile.scheduler == "slurm" and self.remote_policy(project_root).allocation == "run":
            tags[MODE_TAG] = "run"
            tags[NEEDS_TAG] = need_of(plan, self.op_name).to_json()
        return tags

    def execute(
        self, context: dg.AssetExecutionContext, project_root: Path, plan: JobPlan
    ) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
        if self.partitions_def() is not None and not context.has_partition_key and not context.has_partition_key_range:
            # Dagster runs a partitioned op without a key when asked to; the workload would fail on pipes.partition_key.
            keys = ", ".join(key.to_user_string() for key in self.asset_keys())
            raise dg.Failure(f"{keys} is partitioned and this run names no partition: nothing was run. Materialize a "
                             f"partition or a backfill: in the UI pick the partitions, or run `.venv/bin/dg launch --assets "
                             f"{keys} --partition <key>` (or `--partition-range <first>...<last>`)")
        script = render_script(plan, project_root / CLUSTERS_DIR)
        for warning in plan.warnings:
            context.log.warning(warning)
        if partition_runs.is_partition_range(context):
            yield from self.execute_partitions(context, project_root, plan, script)
            return
        if plan.profile.scheduler == "slurm":
            yield from SlurmRun(context, plan, project_root, self.remote_policy(project_root), self.op_name).execute()
            return
        context.log.info(f"running {plan.job.workload} locally ({plan.notes[0] if plan.notes else ''})")
        stamp = datetime.datetime.now().strftime("%Y%m%dT%H%M%S")
        job_dir = make_job_dir(project_root / LOCAL_JOBS_DIR, f"{stamp}-{context.run.run_id[:8]}-{self.op_name}")
        yield from run_script(
            context,
            script=script,
            job_dir=job_dir,
            workloads_dir=project_root / WORKLOADS_DIR,
            env={"HPC_CLUSTER": plan.profile.name},
            metadata=plan_values(plan.profile.name, self.launcher, f"{WORKLOADS_DIR}/{plan.job.workload}", script),
            cpus=plan.job.resources.cpus_per_task * plan.job.resources.total_tasks,
        )

    def partitions_def(self) -> dg.PartitionsDefinition | None:
        """The assets' partitions; None for unpartitioned components."""
        return None

    def partition_env(self, context: dg.AssetExecutionContext) -> tuple[tuple[str, str], ...]:
        """HPC_PARTITION_KEY for a run of one partition (a backfill's tasks get theirs from the array)."""
        return (("HPC_PARTITION_KEY", context.partition_key),) if context.has_partition_key else ()

    def max_concurrent(self) -> int:
        if self.submission.max_concurrent < 1:
            raise ConfigError(f"submission.max_concurrent is {self.submission.max_concurrent}",
                              fix="give how many partitions may compute at once, at least 1 (for example 8)",
                              location=Location(key="submission.max_concurrent"))
        return self.submission.max_concurrent

    def execute_partitions(
        self, context: dg.AssetExecutionContext, project_root: Path, plan: JobPlan, script: str
    ) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
        """A backfill's partitions: one Slurm job array (components.core.array_run), or local processes, at most
        submission.max_concurrent at once; each partition recorded on its own (components.core.partition_runs)."""
        keys = partition_runs.run_partition_keys(context)
        done = partition_runs.done_in_lineage(context, keys)
        todo = [key for key in keys if key not in done]
        if done:
            context.log.info(f"{len(done)} of {len(keys)} partitions were materialized earlier in this run's lineage; "
                             f"computing the other {len(todo)}: {', '.join(todo) or 'none'}")
        definition = context.assets_def.partitions_def
        tasks: list = []
        if todo and plan.profile.scheduler == "slurm":
            run = ArrayRun(context, plan, project_root, self.remote_policy(project_root), self.op_name, definition, self.max_concurrent())
            tasks = run.run_partitions(todo)
        elif todo:
            tasks = run_partitions_locally(
                context, todo, self.max_concurrent(), script=script, jobs_root=project_root / LOCAL_JOBS_DIR,
                name=self.op_name, workloads_dir=project_root / WORKLOADS_DIR, env={"HPC_CLUSTER": plan.profile.name},
                metadata=plan_values(plan.profile.name, self.launcher, f"{WORKLOADS_DIR}/{plan.job.workload}", script),
                cpus=plan.job.resources.cpus_per_task * plan.job.resources.total_tasks, definition=definition,
            )
        yield from partition_runs.report(context, tasks, done)

    # --- internals ---------------------------------------------------------------------------

    def _check_env_names(self) -> None:
        # The core refuses bad names too, but only here is the key known that the user must fix.
        named = [(f"env.{name}", name) for name in self.env]
        named += [(f"forward_env.{index}", name) for index, name in enumerate(self.forward_env)]
        for key, name in named:
            try:
                shell.check_env_name(str(name))
            except ValueError as exc:
                raise ConfigError(str(exc), fix="rename it, for example to " + _env_like(str(name)),
                                  location=Location(key=key)) from None

    def _workload_path(self, project_root: Path) -> PurePosixPath:
        raw = PurePosixPath(self.script)
        if raw.parts and raw.parts[0] == WORKLOADS_DIR:
            raw = PurePosixPath(*raw.parts[1:])
        if raw.is_absolute() or ".." in raw.parts or not raw.parts:
            raise ConfigError(
                f"script {self.script!r} must be a relative path inside {WORKLOADS_DIR}/",
                fix=f"move the file into {WORKLOADS_DIR}/ and give its path relative to it",
                location=Location(key="script"),
            )
        if self.launcher == "python" and raw.suffix == ".py" and raw.stem in sys.stdlib_module_names:
            # Python puts the script's directory first on sys.path: numbers.py would replace `numbers`.
            raise ConfigError(
                f"workload {WORKLOADS_DIR}/{raw} shadows the standard library module {raw.stem!r}",
                fix=f"rename it, for example to {WORKLOADS_DIR}/{raw.with_stem(raw.stem + '_job')}",
                location=Location(key="script"),
            )
        if not (project_root / WORKLOADS_DIR / raw).is_file():
            available = sorted(
                str(p.relative_to(project_root / WORKLOADS_DIR))
                for p in (project_root / WORKLOADS_DIR).rglob("*")
                if p.is_file() and p.suffix in (".py", ".sh")
            )
            raise ConfigError(
                f"workload script {WORKLOADS_DIR}/{raw} does not exist",
                fix=f"create it, or use one of: {', '.join(available) or 'none yet'}",
                location=Location(key="script"),
            )
        return raw


@functools.cache
def _sharpened(model: type[BaseModel], component: type[BaseModel]) -> type[BaseModel]:
    # Only our own nested models are walked by the load-time check, so only they get lenient text.
    ours = {f"{cls.__name__}Model" for cls in _nested_models(component)}

    def model_json_schema(inner, *args, **kwargs):
        return attribute_schema.sharpen(model.model_json_schema.__func__(inner, *args, **kwargs), ours)

    return type(model.__name__, (model,), {"model_json_schema": classmethod(model_json_schema),
                                            "__module__": model.__module__})


def _nested_models(model: type[BaseModel]) -> set[type[BaseModel]]:
    found: set[type[BaseModel]] = set()
    pending = [info.annotation for info in model.model_fields.values()]
    while pending:
        annotation = pending.pop()
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            if annotation not in found:
                found.add(annotation)
                pending.extend(info.annotation for info in annotation.model_fields.values())
        else:
            pending.extend(typing.get_args(annotation))
    return found


def _env_like(name: str) -> str:
    cleaned = "".join(c if c.isalnum() or c == "_" else "_" for c in name.upper()) or "NAME"
    return cleaned if not cleaned[0].isdigit() else "_" + cleaned


def _placed(exc: Exception, defs_file: Path) -> ConfigError:
    """Point an error at defs.yaml: the line of the attribute at fault (the raiser names its key)."""
    if isinstance(exc, ConfigError):
        error = exc
    else:
        key = f"resources.{exc.field}" if isinstance(exc, ResourceError) else None
        error = ConfigError(str(exc), location=Location(key=key))
    lines = _line_map(defs_file)
    parts = (error.location.key or "").split(".") if error.location.key else []
    key_path: KeyPath = ("attributes", *(int(p) if p.isdigit() else p for p in parts))
    here = lines.location(key_path) if lines else Location(file=defs_file, key=".".join(map(str, key_path)))
    if error.location.variable is not None:
        return error  # from the environment: no file is at fault, and every asset would say the same
    if error.location.file is not None:
        # The fault is in a profile, template or branches.yaml; say which asset definition led there
        # (its key path is the other file's: only the definition's file and its attributes' line are ours).
        used_by = lines.location(("attributes",)) if lines else Location(file=defs_file)
        used_by = Location(file=used_by.file, line=used_by.line)
        return ConfigError(f"{error.problem}\n  used by: {used_by}", fix=error.fix, location=error.location)
    return ConfigError(error.problem, fix=error.fix, location=here)


def _line_map(defs_file: Path) -> LineMap | None:
    try:
        return load_yaml(defs_file)[1]
    except ConfigError:
        # Several documents in one defs.yaml: fall back to the file without a line.
        return None


def _no_attributes(cls: type[WorkloadComponent], defs_file: Path) -> ConfigError:
    """A component declared without attributes: name its file and what it needs at least."""
    required = [name for name, field in cls.model_fields.items() if field.is_required()]
    type_name = f"{cls.__module__.rpartition('.')[0] or cls.__module__}.{cls.__name__}"
    return ConfigError(
        f"{type_name} has no attributes; it needs at least: {', '.join(required)}",
        fix=f"fill in `attributes:`, or write a working one with `dg scaffold defs {type_name} <name>`",
        location=Location(file=defs_file, key="attributes"),
    )
