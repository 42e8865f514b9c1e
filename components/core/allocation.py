"""Run-scoped Slurm allocations, the pure part: what a step needs, how big the allocation of a run
is, whether a step fits in it, the `srun` line of a step and the allocation's own script.

One allocation (an sbatch job whose script is a small dispatcher, clusters/templates/allocation.sbatch.j2)
serves the steps of one Dagster run on one cluster: each step drops a request file into the
allocation's directory and the dispatcher starts the step's job script there, whose workload runs as
its own `srun` job step. The orchestrator touches a heartbeat file while it follows its steps; the
dispatcher ends the allocation when the run's steps are all done, when it has been idle and unheard
for `idle_timeout_s`, or when it has been unheard for `abandon_s` (the steps' outage tolerance) even
with steps running. No connection here.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from components.core import shell
from components.core.errors import ConfigError
from components.core.profiles import ClusterProfile
from components.core.render import Directive, JobPlan, JobSpec, plan_job, template_environment
from components.core.resources import JobResources
from components.core.units import format_mem, format_time, parse_mem_mb

ALLOCATION_TEMPLATE = "allocation.sbatch.j2"
ALLOCATION_TAG_PREFIX = "hpc/allocation/"  # + "<cluster>/<partition>": the run's allocation there (AllocationRecord.tag())
NEEDS_TAG = "hpc/needs"  # op tag: the step's StepNeed as JSON, read by the step that sizes the allocation
MODE_TAG = "hpc/allocation"  # op tag: "run" when the op asks for the run's allocation


@dataclass(frozen=True)
class StepNeed:
    """What one step asks of Slurm, per node where it says so.

    mem_mb is per node (None: not declared; the step gets the partition's memory per core times its
    cores). time_s is the step's --time. why_not: set when the step can never run in a shared
    allocation (launcher ray, --exclusive, extra directives), with the reason.
    """

    op: str
    nodes: int
    tasks: int
    cpus_per_task: int
    mem_mb: int | None
    gpus: int
    time_s: int
    partition: str
    qos: str | None
    account: str | None
    why_not: str | None = None

    @property
    def cpus_per_node(self) -> int:
        return math.ceil(self.tasks / self.nodes) * self.cpus_per_task

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @staticmethod
    def from_json(text: str) -> StepNeed | None:
        """The need an op tag carries; None for a malformed or foreign tag."""
        try:
            return StepNeed(**json.loads(text))
        except (TypeError, ValueError):
            return None


@dataclass(frozen=True)
class AllocationShape:
    """The allocation of a run: nodes, cores and memory (MB) per node, GPUs per node, time (seconds),
    and where it lands. `steps` names the ops it was sized for (the dispatcher ends the allocation
    once each of them has run in it)."""

    nodes: int
    cpus_per_node: int
    mem_mb: int | None
    gpus: int
    time_s: int
    partition: str
    qos: str | None
    account: str | None
    steps: tuple[str, ...] = ()

    def describe(self) -> str:
        mem = f", {format_mem(self.mem_mb)} per node" if self.mem_mb else ""
        gpus = f", {self.gpus} GPU(s) per node" if self.gpus else ""
        return (f"{self.nodes} node(s) x {self.cpus_per_node} core(s){mem}{gpus}, {format_time(self.time_s)}, "
                f"partition {self.partition}")


def placement_values(plan: JobPlan) -> dict[str, str]:
    """{"partition": ..., "qos": ..., "account": ...} as the plan's directives ask for them."""
    values = {}
    for directive in plan.directives:
        match = re.fullmatch(r"--(partition|qos|account)=(\S+)", str(directive.option))
        if match:
            values[match.group(1)] = match.group(2)
    return values


def need_of(plan: JobPlan, op: str) -> StepNeed:
    """The StepNeed of a planned Slurm step (plan_job's output for the step's own job)."""
    res, where = plan.job.resources, placement_values(plan)
    why_not = None
    if plan.job.launcher == "ray":
        why_not = "launcher ray brings up its own Ray cluster over a job's nodes"
    elif getattr(plan.job, "array", None):
        why_not = "a backfill of several partitions runs as a Slurm job array"
    elif res.exclusive:
        why_not = "it asks for whole nodes (exclusive)"
    elif res.extra_directives:
        why_not = f"its extra_directives ({' '.join(res.extra_directives)}) apply to a job, not a job step"
    return StepNeed(op=op, nodes=res.nodes, tasks=res.total_tasks, cpus_per_task=res.cpus_per_task, mem_mb=res.mem_mb,
                    gpus=res.gpus, time_s=plan.time_limit_s or 0, partition=where.get("partition", ""),
                    qos=where.get("qos"), account=where.get("account"), why_not=why_not)


def node_of(profile: ClusterProfile, partition: str) -> tuple[int | None, int | None]:
    """(cores, memory in MB) of one node of this partition, as far as the profile's partition classes say."""
    for pclass in (profile.slurm.partitions.values() if profile.slurm else ()):
        if pclass.partition == partition:
            return pclass.cpus_per_node, (parse_mem_mb(pclass.mem_per_node) if pclass.mem_per_node else None)
    return None, None


def mem_per_core_mb(profile: ClusterProfile, partition: str) -> int | None:
    """The memory that comes with one core on this partition (mem_per_node / cpus_per_node), if the profile says."""
    cpus, mem = node_of(profile, partition)
    return mem // cpus if cpus and mem else None


def step_mem_mb(need: StepNeed, per_core_mb: int | None) -> int | None:
    """Memory per node a step is given inside an allocation: its own, else its cores' share."""
    if need.mem_mb is not None:
        return need.mem_mb
    return per_core_mb * need.cpus_per_node if per_core_mb else None


def size(first: StepNeed, others: list[StepNeed], per_core_mb: int | None, max_time_s: int | None,
         explicit: JobResources | None = None, *, node_cpus: int | None = None, node_mem_mb: int | None = None) -> AllocationShape:
    """The allocation for a run whose step `first` asks for it, sized for every step of the run that can share it.

    Steps share it when they land where `first` does (partition, QoS, account) and none of them must
    run alone. Nodes and GPUs per node: the largest step's. Cores and memory per node: enough for the
    steps side by side, up to one node of the partition (node_cpus, node_mem_mb), never less than the
    largest step's. Time: the sum of theirs (they may run one after another), capped at max_time_s.
    Fields of `explicit` (submission.allocation_resources) replace the computed ones.
    """
    group = [first, *(n for n in others if n.op != first.op and n.why_not is None and _same_place(n, first))]
    total_time = sum(n.time_s for n in group) or first.time_s
    mems = [step_mem_mb(n, per_core_mb) for n in group]
    # Cores and memory: room for the steps side by side, up to one node of the partition; never less
    # than the largest step. GPUs: the largest step's (steps needing them take turns).
    cpus = max(n.cpus_per_node for n in group)
    cpus = max(cpus, min(sum(n.cpus_per_node for n in group), node_cpus or cpus))
    mem = None
    if all(m is not None for m in mems):
        mem = max(mems)
        mem = max(mem, min(sum(mems), node_mem_mb or mem))
    shape = AllocationShape(
        nodes=max(n.nodes for n in group),
        cpus_per_node=cpus,
        mem_mb=mem,
        gpus=max(n.gpus for n in group),
        time_s=min(total_time, max_time_s) if max_time_s else total_time,
        partition=first.partition, qos=first.qos, account=first.account,
        steps=tuple(sorted({n.op for n in group})),
    )
    if explicit is not None:
        shape = replace(
            shape,
            nodes=explicit.nodes,
            cpus_per_node=math.ceil(explicit.total_tasks / explicit.nodes) * explicit.cpus_per_task,
            mem_mb=explicit.mem_mb if explicit.mem_mb is not None else shape.mem_mb,
            gpus=explicit.gpus if explicit.gpus else shape.gpus,
            time_s=explicit.time_s or shape.time_s,
        )
    return shape


def _same_place(a: StepNeed, b: StepNeed) -> bool:
    return (a.partition, a.qos, a.account) == (b.partition, b.qos, b.account)


def fits(need: StepNeed, shape: AllocationShape, per_core_mb: int | None, remaining_s: float | None = None) -> str | None:
    """None when the step can run inside the allocation, else why not (one line, for the step's log)."""
    if need.why_not:
        return need.why_not
    if not _same_place(need, shape_need(shape)):
        return (f"it runs on partition {need.partition} (QoS {need.qos}, account {need.account}), the allocation on "
                f"{shape.partition} (QoS {shape.qos}, account {shape.account})")
    mem = step_mem_mb(need, per_core_mb)
    for what, asked, held in (("nodes", need.nodes, shape.nodes), ("cores per node", need.cpus_per_node, shape.cpus_per_node),
                              ("GPUs per node", need.gpus, shape.gpus)):
        if asked > held:
            return f"it needs {asked} {what}, the allocation holds {held}"
    if mem is not None and shape.mem_mb is not None and mem > shape.mem_mb:
        return f"it needs {format_mem(mem)} per node, the allocation holds {format_mem(shape.mem_mb)}"
    if remaining_s is not None and need.time_s > remaining_s:
        return f"it may run {format_time(need.time_s)}, the allocation has {format_time(int(remaining_s))} left"
    return None


def shape_need(shape: AllocationShape) -> StepNeed:
    return StepNeed("", shape.nodes, shape.nodes, shape.cpus_per_node, shape.mem_mb, shape.gpus, shape.time_s,
                    shape.partition, shape.qos, shape.account)


def step_name(op: str, attempt: int) -> str:
    """The step's name in the allocation: its request file, its srun --job-name and its sacct JobName."""
    return str(shell.job_name(f"{op}.{attempt}"))


def srun_prefix(profile: ClusterProfile, need: StepNeed, name: str, per_core_mb: int | None) -> shell.ShellSafe:
    """`srun ...` that makes the workload its own job step of the allocation, sized as the step asked.

    --exact gives the step only what it asks, so steps that fit side by side run concurrently and the
    others wait for room (srun: "Step creation temporarily disabled, retrying").
    """
    assert profile.slurm is not None
    args = ["srun", f"--job-name={name}", f"--nodes={need.nodes}", f"--ntasks={need.tasks}",
            f"--cpus-per-task={need.cpus_per_task}", "--exact"]
    mem = step_mem_mb(need, per_core_mb)
    if mem is not None:
        args.append(f"--mem={format_mem(mem)}")
    if need.gpus:
        args.append(profile.slurm.gpu_directive.format(gpus=need.gpus))
    if need.time_s:
        args.append(f"--time={format_time(need.time_s)}")
    checked = [str(shell.check_directive(a)) if a.startswith("--") else a for a in args]
    return shell.ShellSafe(" ".join([*checked, *profile.slurm.srun_args]))


@dataclass(frozen=True)
class AllocationRecord:
    """A run's allocation on one cluster, as a run tag: its job id, directory and shape."""

    cluster: str
    job_id: str
    alloc_dir: str
    shape: AllocationShape

    def tag(self) -> str:
        return json.dumps({"cluster": self.cluster, "job_id": self.job_id, "dir": self.alloc_dir,
                           "shape": asdict(self.shape)}, sort_keys=True)

    @staticmethod
    def from_tag(text: str) -> AllocationRecord | None:
        try:
            data = json.loads(text)
            shape = data["shape"]
            shape["steps"] = tuple(shape.get("steps", ()))
            return AllocationRecord(data["cluster"], str(data["job_id"]), data["dir"], AllocationShape(**shape))
        except (TypeError, ValueError, KeyError):
            return None


def allocation_plan(profile: ClusterProfile, shape: AllocationShape, name: str, *, strict: bool = True) -> JobPlan:
    """The allocation's sbatch directives through the profile (omitted directives, account, time
    limits as for any job), each traced to the steps it was sized for."""
    resources = JobResources(nodes=shape.nodes, ntasks=shape.nodes, cpus_per_task=shape.cpus_per_node,
                             mem=None if shape.mem_mb is None else f"{shape.mem_mb}M", gpus=shape.gpus,
                             time=format_time(shape.time_s), partition=shape.partition, qos=shape.qos, account=shape.account)
    spec = JobSpec(name=name, assets=shape.steps or (name,), workload=Path("allocation"), launcher="bash", resources=resources)
    plan = plan_job(profile, spec, strict=strict)
    sized = f"allocation sized for steps {', '.join(shape.steps) or name}"
    traced = tuple(Directive(d.option, sized if d.source.startswith("resources.") or d.source.startswith("asset ") else d.source)
                   for d in plan.directives)
    return replace(plan, directives=traced)


def render_allocation(plan: JobPlan, clusters_dir: Path, *, idle_timeout_s: int, abandon_s: int) -> str:
    """The allocation's script: #SBATCH lines and the dispatcher loop (clusters/templates/allocation.sbatch.j2).

    Raises ConfigError when the template is broken, naming it.
    """
    import jinja2

    from components.core.render import _comment

    context = {
        "profile": {"name": plan.profile.name, "description": _comment(plan.profile.description),
                    "source": _comment(plan.profile.source())},
        "job": {"name": shell.job_name(plan.job.name), "assets": [_comment(a) for a in plan.job.assets]},
        "directives": plan.directives,
        "notes": [_comment(n) for n in plan.notes],
        "allocation": {"idle_timeout_s": int(idle_timeout_s), "abandon_s": int(abandon_s),
                       "steps": [shell.ShellSafe(str(shell.job_name(s))) for s in plan.job.assets]},
    }
    try:
        return template_environment(clusters_dir).get_template(ALLOCATION_TEMPLATE).render(**context)
    except jinja2.TemplateError as exc:
        raise ConfigError(f"template error in {ALLOCATION_TEMPLATE}: {exc}",
                          fix="restore clusters/templates/allocation.sbatch.j2 from the project template") from None


def preview(plan: JobPlan, op: str, clusters_dir: Path, *, idle_timeout_s: int, abandon_s: int,
            explicit: JobResources | None = None, strict: bool = False) -> tuple[JobPlan, str | None]:
    """What `hpc render` shows for a step with submission.allocation: run: its plan with the srun line
    that makes it a job step, and the allocation's script sized for this step alone (in a run, it is
    sized from all the run's steps on the partition). (plan unchanged, None) for a step that must run alone."""
    profile = plan.profile
    need = need_of(plan, op)
    if need.why_not is not None:
        return replace(plan, notes=(*plan.notes, f"runs as a Slurm job of its own, not in the run's allocation: {need.why_not}")), None
    per_core = mem_per_core_mb(profile, need.partition)
    runtime = replace(plan.runtime, step_srun=srun_prefix(profile, need, step_name(op, 1), per_core))
    stepped = plan_job(profile, plan.job, strict=strict, runtime=runtime)
    note = "runs as an srun job step of the run's allocation (submission.allocation: run); its script follows this one"
    stepped = replace(stepped, notes=(*plan.notes, note), warnings=plan.warnings)
    cpus, mem = node_of(profile, need.partition)
    shape = size(need, [], per_core, None, explicit, node_cpus=cpus, node_mem_mb=mem)
    alloc = allocation_plan(profile, shape, "alloc-RUNID", strict=strict)
    alloc = replace(alloc, notes=("sized here for this step alone; in a run, for every step of the run on this partition",))
    return stepped, render_allocation(alloc, clusters_dir, idle_timeout_s=idle_timeout_s, abandon_s=abandon_s)
