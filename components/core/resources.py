"""What a job asks for, and whether (and where) it fits on a cluster profile."""

from __future__ import annotations

from dataclasses import dataclass, field

from components.core import shell
from components.core.errors import ConfigError, Location
from components.core.profiles import ClusterProfile, PartitionClass
from components.core.units import format_mem, format_time, parse_mem_mb, parse_time_s


class ResourceError(ValueError):
    """A resource value that can never be valid; `field` names the attribute at fault."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(message)


@dataclass(frozen=True)
class JobResources:
    """A resource request in Slurm's terms. GPUs are per node, as on every site we target."""

    nodes: int = 1
    ntasks: int | None = None
    cpus_per_task: int = 1
    mem: str | None = None
    gpus: int = 0
    time: str | None = None
    partition_class: str | None = None
    partition: str | None = None
    qos: str | None = None
    account: str | None = None
    exclusive: bool = False
    extra_directives: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        # Fail at construction so a bad value never reaches a script.
        for name in ("nodes", "cpus_per_task"):
            if getattr(self, name) < 1:
                raise ResourceError(name, f"{name} must be at least 1, got {getattr(self, name)}")
        if self.ntasks is not None and self.ntasks < 1:
            raise ResourceError("ntasks", f"ntasks must be at least 1, got {self.ntasks}")
        if self.gpus < 0:
            raise ResourceError("gpus", f"gpus must be 0 or more, got {self.gpus}")
        checks = [("mem", parse_mem_mb, self.mem), ("time", parse_time_s, self.time)]
        checks += [(n, lambda v, n=n: shell.check_directive(f"--{n}={v}"), getattr(self, n)) for n in ("partition", "qos", "account")]
        checks += [(f"extra_directives.{i}", shell.check_extra_directive, d) for i, d in enumerate(self.extra_directives)]
        for name, check, value in checks:
            if value is None:
                continue
            try:
                check(value)
            except ValueError as exc:
                raise ResourceError(name, str(exc)) from None

    @property
    def mem_mb(self) -> int | None:
        return None if self.mem is None else parse_mem_mb(self.mem)

    @property
    def time_s(self) -> int | None:
        return None if self.time is None else parse_time_s(self.time)

    @property
    def total_tasks(self) -> int:
        return self.ntasks if self.ntasks is not None else self.nodes


@dataclass(frozen=True)
class Placement:
    """The partition class a request lands in, with its effective time."""

    class_name: str
    pclass: PartitionClass
    time_s: int
    time_source: str


def place(profile: ClusterProfile, res: JobResources) -> Placement:
    """Choose the partition class and check the request against the site's limits."""
    assert profile.slurm is not None, "only slurm profiles place jobs"
    slurm = profile.slurm
    if res.partition_class:
        class_name = res.partition_class
    elif res.gpus > 0 and slurm.gpu_partition_class in slurm.partitions:
        class_name = slurm.gpu_partition_class
    else:
        class_name = slurm.default_partition_class
    if class_name not in slurm.partitions:
        raise ConfigError(
            f"partition class {class_name!r} is not defined on cluster {profile.name!r}",
            fix=f"use one of: {', '.join(slurm.partitions)} (or add it to {profile.source('slurm', 'partitions')})",
            location=Location(key="resources.partition_class"),
        )
    pclass = slurm.partitions[class_name]
    where = ("slurm", "partitions", class_name)

    if res.gpus > 0 and pclass.gpus_per_node == 0:
        gpu_classes = [n for n, c in slurm.partitions.items() if c.gpus_per_node > 0]
        raise ConfigError(
            f"gpus: {res.gpus} requested on partition class {class_name!r} of {profile.name}, which has no GPUs",
            fix=f"set partition_class to a GPU class ({', '.join(gpu_classes) or 'none on this cluster'}) or gpus: 0",
            location=Location(key="resources.gpus"),
        )
    if res.gpus > pclass.gpus_per_node > 0:
        raise ConfigError(
            f"gpus: {res.gpus} per node exceeds the {pclass.gpus_per_node} GPUs of a {class_name!r} node "
            f"({profile.source(*where, 'gpus_per_node')})",
            fix=f"request at most {pclass.gpus_per_node} GPUs per node and add nodes instead",
            location=Location(key="resources.gpus"),
        )
    if pclass.multi_node_full_gpus and res.nodes > 1 and res.gpus != pclass.gpus_per_node:
        raise ConfigError(
            f"a {res.nodes}-node job on partition class {class_name!r} must take all {pclass.gpus_per_node} GPUs "
            f"of each node, not {res.gpus} ({profile.source(*where, 'multi_node_full_gpus')})",
            fix=f"set gpus: {pclass.gpus_per_node}, or nodes: 1",
            location=Location(key="resources.gpus"),
        )
    if pclass.max_nodes is not None and res.nodes > pclass.max_nodes:
        raise ConfigError(
            f"nodes: {res.nodes} exceeds max_nodes {pclass.max_nodes} of partition class {class_name!r} "
            f"({profile.source(*where, 'max_nodes')})",
            fix=f"request at most {pclass.max_nodes} nodes or choose another partition_class",
            location=Location(key="resources.nodes"),
        )
    if pclass.cpus_per_node is not None and res.cpus_per_task > pclass.cpus_per_node:
        raise ConfigError(
            f"cpus_per_task: {res.cpus_per_task} exceeds the {pclass.cpus_per_node} cores of a {class_name!r} node "
            f"({profile.source(*where, 'cpus_per_node')})",
            fix=f"request at most {pclass.cpus_per_node} CPUs per task",
            location=Location(key="resources.cpus_per_task"),
        )
    if pclass.mem_per_node is not None and res.mem_mb is not None and res.mem_mb > parse_mem_mb(pclass.mem_per_node):
        raise ConfigError(
            f"mem: {res.mem} exceeds the {pclass.mem_per_node} of a {class_name!r} node "
            f"({profile.source(*where, 'mem_per_node')})",
            fix=f"request at most {pclass.mem_per_node} per node",
            location=Location(key="resources.mem"),
        )

    if res.time is not None:
        time_s, time_source = parse_time_s(res.time), "resources.time"
    elif pclass.default_time:
        time_s, time_source = parse_time_s(pclass.default_time), profile.source(*where, "default_time")
    else:
        time_s, time_source = parse_time_s(slurm.default_time), profile.source("slurm", "default_time")
    for limit, path in ((pclass.max_time, (*where, "max_time")), (slurm.max_time, ("slurm", "max_time"))):
        if limit and time_s > parse_time_s(limit):
            raise ConfigError(
                f"time {format_time(time_s)} exceeds the maximum {format_time(parse_time_s(limit))} "
                f"of partition class {class_name!r} on {profile.name} ({profile.source(*path)})",
                fix=f"lower time to at most {format_time(parse_time_s(limit))} or choose a partition_class with a longer limit",
            location=Location(key="resources.time"),
            )
    return Placement(class_name=class_name, pclass=pclass, time_s=time_s, time_source=time_source)


def describe(res: JobResources) -> str:
    """One line for logs and local-mode comments."""
    parts = [f"nodes={res.nodes}", f"ntasks={res.total_tasks}", f"cpus_per_task={res.cpus_per_task}"]
    if res.mem_mb is not None:
        parts.append(f"mem={format_mem(res.mem_mb)}")
    if res.gpus:
        parts.append(f"gpus={res.gpus}")
    if res.time_s is not None:
        parts.append(f"time={format_time(res.time_s)}")
    return " ".join(parts)
