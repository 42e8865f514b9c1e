"""Cluster profiles: site knowledge as data in clusters/<name>.yaml.

A profile may `extends:` another (deep merge, lists replaced) and a project may override any key
in clusters/overrides/<name>.yaml without touching the shipped file. Every problem is reported
with the file and line that caused it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator

from components.core import shell
from components.core.environment_settings import EnvironmentSettings, StrictModel
from components.core.errors import ConfigError, Location
from components.core.project import load_settings
from components.core.units import parse_mem_mb, parse_time_s
from components.core.yamlio import KeyPath, LineMap, dotted, load_yaml

CLUSTER_ENV_VAR = "HPC_CLUSTER"
# Wins over every asset's own `cluster:` too: "run everything here", as a project's local tests need.
FORCE_CLUSTER_ENV_VAR = "HPC_FORCE_CLUSTER"
DEFAULT_CLUSTER = "local"
OVERRIDES_DIR = "overrides"
TEMPLATES_DIR = "templates"


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
        text = _relative(loc.file) if loc.file else f"profile {self.name}"
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


def _relative(path: Path) -> str:
    parts = Path(path).parts
    # Show profiles as clusters/<file>: the directory name users recognise.
    if "clusters" in parts:
        return str(Path(*parts[len(parts) - 1 - parts[::-1].index("clusters"):]))
    return str(path)


def _deep_merge(base: Any, over: Any, base_origin: dict, over_origin: dict, prefix: KeyPath, out: dict) -> Any:
    if isinstance(base, dict) and isinstance(over, dict):
        merged = dict(base)
        for key, value in over.items():
            path = (*prefix, str(key))
            if key in base:
                merged[key] = _deep_merge(base[key], value, base_origin, over_origin, path, out)
            else:
                merged[key] = value
                _copy_origins(over_origin, path, out)
            out[path] = over_origin.get(path, out.get(path))
        return merged
    # Scalars and lists are replaced whole: appending to a parent's partition list is rarely intended.
    _drop_origins(out, prefix)
    _copy_origins(over_origin, prefix, out)
    return over


def _copy_origins(src: dict, prefix: KeyPath, out: dict) -> None:
    for path, origin in src.items():
        if path[: len(prefix)] == prefix:
            out[path] = origin


def _drop_origins(out: dict, prefix: KeyPath) -> None:
    for path in [p for p in out if p[: len(prefix)] == prefix and p != prefix]:
        del out[path]


def _origins(lines: LineMap) -> dict[KeyPath, tuple[Path, int]]:
    return {path: (lines.file, line) for path, line in lines.items()}


def available_profiles(clusters_dir: Path) -> list[str]:
    return sorted(p.stem for p in Path(clusters_dir).glob("*.yaml"))


def _read_raw(clusters_dir: Path, name: str, chain: tuple[str, ...]) -> tuple[dict, dict]:
    file = Path(clusters_dir) / f"{name}.yaml"
    if not file.is_file():
        names = ", ".join(available_profiles(clusters_dir)) or "none"
        raise ConfigError(
            f"unknown cluster {name!r}: there is no {_relative(file)}",
            fix=f"use one of: {names}; or add clusters/{name}.yaml (see clusters/README.md)",
        )
    data, lines = load_yaml(file)
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError("a cluster profile must be a mapping of keys", location=Location(file=file, line=1))
    origins = _origins(lines)
    parent = data.get("extends")
    if parent is not None:
        if not isinstance(parent, str):
            raise ConfigError("extends must be a profile name", location=lines.location(("extends",)))
        if parent in (*chain, name):
            cycle = " -> ".join((*chain, name, parent))
            raise ConfigError(f"profiles extend each other in a cycle: {cycle}", location=lines.location(("extends",)))
        try:
            base, base_origins = _read_raw(clusters_dir, parent, (*chain, name))
        except ConfigError as exc:
            raise exc.at(lines.location(("extends",))) from None
        out = dict(base_origins)
        data = _deep_merge(base, data, base_origins, origins, (), out)
        origins = out
    override = Path(clusters_dir) / OVERRIDES_DIR / f"{name}.yaml"
    if not chain and override.is_file():
        extra, extra_lines = load_yaml(override)
        if extra is not None:
            if not isinstance(extra, dict):
                raise ConfigError("a profile override must be a mapping", location=Location(file=override, line=1))
            out = dict(origins)
            data = _deep_merge(data, extra, origins, _origins(extra_lines), (), out)
            origins = out
    return data, origins


def load_profile(name: str, clusters_dir: Path) -> ClusterProfile:
    """Load, merge and validate clusters/<name>.yaml; raise ConfigError naming the file and line."""
    data, origins = _read_raw(clusters_dir, name, ())
    data = {**data, "name": data.get("name", name)}
    data.pop("extends", None)

    def where(path: KeyPath) -> Location:
        for end in range(len(path), -1, -1):
            origin = origins.get(tuple(path[:end]))
            if origin is not None:
                return Location(file=origin[0], line=origin[1], key=dotted(path) or None)
        return Location(file=Path(clusters_dir) / f"{name}.yaml", key=dotted(path) or None)

    settings = load_settings(_project_root(Path(clusters_dir)))
    try:
        profile = ClusterProfile.model_validate({
            **data, "origins": origins,
            "project_user_env": settings.user_env, "project_account_env": settings.account_env,
        })
    except ValidationError as exc:
        raise _first_error(exc, where) from None
    if profile.name != name:
        raise ConfigError(
            f"profile declares name {profile.name!r} but its file is {name}.yaml",
            fix=f"rename the file or set name: {name}",
            location=where(("name",)),
        )
    _check_semantics(profile, Path(clusters_dir), where)
    return profile


_FIXES = {
    "extra_forbidden": "remove the key or correct its spelling; the keys each section accepts are listed in clusters/README.md",
    "missing": "add the key",
}


def _first_error(exc: ValidationError, where) -> ConfigError:
    error = exc.errors()[0]
    loc = tuple(str(p) if not isinstance(p, int) else p for p in error["loc"])
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = f"unknown key {loc[-1]!r}"
    elif error["type"] == "missing":
        message = f"required key {loc[-1]!r} is missing"
    elif "input" in error and not isinstance(error["input"], dict | list):
        message = f"{message} (got {error['input']!r})"
    return ConfigError(message, fix=_FIXES.get(error["type"]), location=where(loc))


def _check_semantics(profile: ClusterProfile, clusters_dir: Path, where) -> None:
    template = clusters_dir / TEMPLATES_DIR / profile.template
    if not template.is_file():
        raise ConfigError(
            f"template {profile.template!r} not found in {_relative(clusters_dir / TEMPLATES_DIR)}",
            fix="name a file in clusters/templates/ (for example base.sbatch.j2)",
            location=where(("template",)),
        )
    strategy = profile.environment.strategy
    if strategy in ("pixi_pack", "apptainer") and getattr(profile.environment, strategy) is None:
        raise ConfigError(
            f"environment.strategy is {strategy} but environment.{strategy} is not set",
            fix=f"add environment.{strategy} (see clusters/README.md)",
            location=where(("environment", "strategy")),
        )
    if profile.scheduler == "local":
        return
    if profile.ssh is None or profile.slurm is None:
        missing = "ssh" if profile.ssh is None else "slurm"
        raise ConfigError(
            f"a slurm profile needs a {missing!r} section",
            fix=f"add {missing}: (see clusters/docker.yaml for a complete example)",
            location=where(()),
        )
    slurm = profile.slurm
    classes = slurm.partitions
    if slurm.default_partition_class not in classes:
        raise ConfigError(
            f"default_partition_class {slurm.default_partition_class!r} has no mapping under slurm.partitions",
            fix=f"add slurm.partitions.{slurm.default_partition_class} or set it to one of: {', '.join(classes)}",
            location=where(("slurm", "default_partition_class")),
        )
    if slurm.gpu_partition_class in classes and classes[slurm.gpu_partition_class].gpus_per_node == 0:
        raise ConfigError(
            f"gpu_partition_class {slurm.gpu_partition_class!r} has gpus_per_node 0",
            fix="set gpus_per_node on that class, or point gpu_partition_class at a GPU class",
            location=where(("slurm", "partitions", slurm.gpu_partition_class)),
        )
    site_max = parse_time_s(slurm.max_time) if slurm.max_time else None
    if site_max is not None and parse_time_s(slurm.default_time) > site_max:
        raise ConfigError(
            f"default_time {slurm.default_time} exceeds max_time {slurm.max_time}",
            fix="lower default_time",
            location=where(("slurm", "default_time")),
        )
    for cname, pclass in classes.items():
        path = ("slurm", "partitions", cname)
        if slurm.qos_required and not pclass.qos:
            raise ConfigError(
                f"partition class {cname!r} has no qos, but this site requires one (slurm.qos_required)",
                fix=f"add qos: to slurm.partitions.{cname}",
                location=where(path),
            )
        for key in ("max_time", "default_time"):
            value = getattr(pclass, key)
            if value and site_max is not None and parse_time_s(value) > site_max:
                raise ConfigError(
                    f"{key} {value} of partition class {cname!r} exceeds the site's max_time {slurm.max_time}",
                    fix=f"lower slurm.partitions.{cname}.{key} or raise slurm.max_time",
                    location=where((*path, key)),
                )
        if pclass.default_time and pclass.max_time and parse_time_s(pclass.default_time) > parse_time_s(pclass.max_time):
            raise ConfigError(
                f"default_time {pclass.default_time} of partition class {cname!r} exceeds its max_time {pclass.max_time}",
                fix="lower default_time",
                location=where((*path, "default_time")),
            )


def _project_root(clusters_dir: Path) -> Path | None:
    root = clusters_dir.parent
    return root if (root / "pyproject.toml").is_file() else None


def resolve_cluster_name(explicit: str | None, project_root: Path | None = None) -> str:
    """$HPC_FORCE_CLUSTER, else an asset's `cluster:`, else $HPC_CLUSTER, else [tool.hpc] cluster, else local.

    Raises ConfigError when a name from the environment or pyproject.toml has no profile in clusters/.
    """
    forced = os.environ.get(FORCE_CLUSTER_ENV_VAR)
    if forced:
        if project_root is not None:
            _known(forced, Path(project_root) / "clusters", f"${FORCE_CLUSTER_ENV_VAR}={forced} names no profile",
                   f"unset {FORCE_CLUSTER_ENV_VAR} or set it to", None)
        return forced
    if explicit:
        return explicit
    from_env = os.environ.get(CLUSTER_ENV_VAR)
    if from_env:
        if project_root is not None:
            _known(from_env, Path(project_root) / "clusters",
                   f"${CLUSTER_ENV_VAR}={from_env} names no profile", f"unset {CLUSTER_ENV_VAR} or set it to", None)
        return from_env
    settings = load_settings(project_root)
    if settings.cluster:
        _known(settings.cluster, Path(project_root) / "clusters", f"the project's default cluster {settings.cluster!r} has no profile",
               "set [tool.hpc] cluster in pyproject.toml to", settings.location("cluster"))
        return settings.cluster
    return DEFAULT_CLUSTER


def _known(name: str, clusters_dir: Path, problem: str, fix: str, location: Location | None) -> None:
    if not (clusters_dir / f"{name}.yaml").is_file():
        names = ", ".join(available_profiles(clusters_dir)) or "none"
        raise ConfigError(f"{problem} (no {_relative(clusters_dir / (name + '.yaml'))})",
                          fix=f"{fix} one of: {names}; or add clusters/{name}.yaml", location=location)
