"""Cluster profiles as data: the models of clusters/<name>.yaml, validated by pydantic.

Loading, merging (`extends:`, overrides) and the checks across keys live in components.core.profiles.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from components.core import shell
from components.core.environment_settings import EnvironmentSettings, StrictModel
from components.core.errors import Location
from components.core.units import parse_mem_mb, parse_time_s
from components.core.yamlio import KeyPath, dotted

_Strict = StrictModel


def _time(value: Any) -> Any:
    if value is not None:
        parse_time_s(value)
    return value


def _mem(value: Any) -> Any:
    if value is not None:
        parse_mem_mb(value)
    return value


class JumpHost(_Strict):
    host: str
    port: int = Field(22, ge=1, le=65535)
    user: str | None = None
    user_env: str | None = None


class SSHSettings(_Strict):
    host: str
    port: int = Field(22, ge=1, le=65535)
    user: str | None = Field(None, description="Remote user name; prefer user_env so profiles stay shareable.")
    user_env: str | None = Field(None, description="Environment variable holding the remote user name.")
    auth: Literal["key", "password_otp", "certificate"] = "key"
    key_file: str | None = None
    certificate_file: str | None = None
    known_hosts: str = "~/.ssh/known_hosts"
    jump_hosts: list[JumpHost] = []
    keepalive_s: int = Field(60, ge=0)
    password_env: str | None = None
    otp_env: str | None = None
    session: Literal["shared", "process"] = Field(
        "shared",
        description="shared: one OpenSSH ControlMaster session per cluster, used by every step, run and schedule "
        "on this machine (`hpc login`); process: one connection per process (for machines whose ssh has no "
        "ControlMaster, such as Windows).",
    )
    session_lifetime: str = Field(
        "12:00:00",
        description="How long a login lasts (Slurm duration). Sites state it: 12 h for VSC-5's OTP and the "
        "step-ca certificates of Leonardo and MUSICA. A session is closed when it runs out.",
    )

    @field_validator("session_lifetime")
    @classmethod
    def _lifetime(cls, value: str) -> str:
        return _time(value)

    @field_validator("user_env", "password_env", "otp_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        return None if value is None else shell.check_env_name(value)


Directive = Literal["nodes", "ntasks", "cpus-per-task", "mem", "time", "qos", "account"]


class PartitionClass(_Strict):
    partition: str
    qos: str | None = None
    description: str | None = None
    cpus_per_node: int | None = Field(None, ge=1)
    mem_per_node: str | None = None
    gpus_per_node: int = Field(0, ge=0)
    max_nodes: int | None = Field(None, ge=1)
    max_time: str | None = None
    default_time: str | None = None
    omit_directives: list[Directive] = Field(
        [], description="Directives the site rejects for this class; they are left out with a comment."
    )
    nodes_directive: Literal["always", "multi_node_only"] = Field(
        "always", description="multi_node_only: a single-node job gets no --nodes (VSC-5 GPU nodes)."
    )
    multi_node_full_gpus: bool = Field(
        False, description="A job on several nodes must take every GPU of each node (VSC-5)."
    )
    extra_directives: list[str] = []

    @field_validator("max_time", "default_time")
    @classmethod
    def _check_time(cls, value: str | None) -> str | None:
        return _time(value)

    @field_validator("mem_per_node")
    @classmethod
    def _check_mem(cls, value: str | None) -> str | None:
        return _mem(value)

    @field_validator("partition", "qos")
    @classmethod
    def _slurm_name(cls, value: str | None) -> str | None:
        if value is not None:
            shell.check_directive(f"--partition={value}")
        return value

    @field_validator("extra_directives")
    @classmethod
    def _directives(cls, value: list[str]) -> list[str]:
        return [shell.check_extra_directive(v) for v in value]


class SlurmSettings(_Strict):
    account: str | None = None
    account_env: str | None = Field(None, description="Environment variable holding the project account.")
    account_required: bool = False
    qos_required: bool = False
    default_time: str = "01:00:00"
    max_time: str | None = None
    default_partition_class: str = "cpu"
    gpu_partition_class: str = "gpu"
    gpu_directive: str = Field("--gres=gpu:{gpus}", description="Per-node GPU request; {gpus} is replaced.")
    partitions: dict[str, PartitionClass]
    extra_directives: list[str] = []
    srun_args: list[str] = []

    @field_validator("default_time", "max_time")
    @classmethod
    def _check_time(cls, value: str | None) -> str | None:
        return _time(value)

    @field_validator("account_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        return None if value is None else shell.check_env_name(value)

    @field_validator("gpu_directive")
    @classmethod
    def _gpu_directive(cls, value: str) -> str:
        if "{gpus}" not in value:
            raise ValueError("gpu_directive must contain {gpus}, for example --gres=gpu:{gpus}")
        shell.check_directive(value.replace("{gpus}", "1"))
        return value

    @field_validator("extra_directives")
    @classmethod
    def _directives(cls, value: list[str]) -> list[str]:
        return [shell.check_extra_directive(v) for v in value]

    @field_validator("srun_args")
    @classmethod
    def _srun_args(cls, value: list[str]) -> list[str]:
        return [shell.check_directive(v) for v in value]


class PathSettings(_Strict):
    base_dir: str = Field("$HOME/dagster-hpc", description="Root of job directories on the cluster.")
    data_dir: str | None = Field(
        None, description="Where workloads keep their outputs ($HPC_DATA_DIR); default <base_dir>/data."
    )

    @field_validator("base_dir", "data_dir")
    @classmethod
    def _path(cls, value: str | None) -> str | None:
        if value is not None:
            shell.quote_path(value)
        return value

    def effective_data_dir(self) -> str:
        return self.data_dir or f"{self.base_dir.rstrip('/')}/data"


class RaySettings(_Strict):
    """How a job with launcher: ray brings up its Ray cluster on this site."""

    setup: list[str] = Field([], description="Shell lines run before Ray starts (ulimit -n 65536 on MUSICA).")
    srun_args: list[str] = Field([], description="Options of the srun steps that run Ray nodes (--cpu-bind=none on Leonardo).")
    temp_root: str = Field("/tmp", description="Node-local directory for Ray's per-job temp dir; keep it short (socket paths).")
    port_base: int = Field(20000, ge=1024, le=60000, description="Start of the range the per-job port block is chosen from.")
    start_timeout_s: int = Field(180, ge=10, description="How long the driver waits for every node to join.")

    @field_validator("setup")
    @classmethod
    def _setup(cls, value: list[str]) -> list[str]:
        return [shell.check_line(v) for v in value]

    @field_validator("srun_args")
    @classmethod
    def _directives(cls, value: list[str]) -> list[str]:
        return [shell.check_directive(v) for v in value]

    @field_validator("temp_root")
    @classmethod
    def _temp_root(cls, value: str) -> str:
        if not value.startswith(("/", "$")) or len(value) > 40:
            raise ValueError("temp_root must be an absolute node-local path of at most 40 characters, such as /tmp")
        return shell.check_line(value)


class ClusterProfile(_Strict):
    name: str
    description: str = ""
    scheduler: Literal["slurm", "local"] = "slurm"
    template: str
    extends: str | None = None
    ssh: SSHSettings | None = None
    slurm: SlurmSettings | None = None
    environment: EnvironmentSettings = EnvironmentSettings()
    paths: PathSettings = PathSettings()
    ray: RaySettings = RaySettings()

    # Where each key came from (file, line) after merging; not part of the YAML.
    origins: dict[KeyPath, tuple[Path, int]] = Field(default_factory=dict, exclude=True, repr=False)
    # The project's [tool.hpc] user_env / account_env: tried after the profile's own variable.
    project_user_env: str | None = Field(None, exclude=True)
    project_account_env: str | None = Field(None, exclude=True)

    def location(self, *path: str | int) -> Location:
        """File and line of a setting, for error messages and script provenance comments."""
        for end in range(len(path), -1, -1):
            origin = self.origins.get(tuple(path[:end]))
            if origin is not None:
                return Location(file=origin[0], line=origin[1], key=dotted(path) or None)
        return Location(key=dotted(path) or None)

    def source(self, *path: str | int) -> str:
        loc = self.location(*path)
        text = relative(loc.file) if loc.file else f"profile {self.name}"
        if loc.line and path:
            text += f":{loc.line}"
        return f"{text} {loc.key}" if loc.key else text

    def partition_class(self, name: str) -> PartitionClass:
        assert self.slurm is not None
        return self.slurm.partitions[name]

    def account_envs(self) -> list[str]:
        """Variables that may hold the Slurm account, in the order they are tried."""
        return [n for n in dict.fromkeys((self.slurm.account_env if self.slurm else None, self.project_account_env)) if n]

    def account_source(self) -> str | None:
        """The variable the account comes from now; None when it is the profile's literal or unset."""
        if self.slurm is None:
            return None
        return from_environment(self.slurm.account_env, self.slurm.account, self.project_account_env)[1]

    def account(self) -> str | None:
        if self.slurm is None:
            return None
        return from_environment(self.slurm.account_env, self.slurm.account, self.project_account_env)[0]


def from_environment(own_env: str | None, literal: str | None, project_env: str | None) -> tuple[str | None, str | None]:
    """A per-user setting and the variable it came from (None for the literal).

    The profile's own variable wins, then its literal, then the project-wide [tool.hpc] variable:
    a site-specific value is more specific than one meant for every cluster.
    """
    if own_env and os.environ.get(own_env):
        return os.environ[own_env], own_env
    if literal:
        return literal, None
    if project_env and os.environ.get(project_env):
        return os.environ[project_env], project_env
    return None, None


def relative(path: Path) -> str:
    parts = Path(path).parts
    # Show profiles as clusters/<file>: the directory name users recognise.
    if "clusters" in parts:
        return str(Path(*parts[len(parts) - 1 - parts[::-1].index("clusters"):]))
    return str(path)


