"""Cluster profiles: site knowledge as data in clusters/<name>.yaml.

A profile may `extends:` another (deep merge, lists replaced) and a project may override any key
in clusters/overrides/<name>.yaml without touching the shipped file (components.core.profile_merge).
The models are in components.core.profile_models; this module loads and checks them, and chooses
which profile an asset runs on. Every problem is reported with the file and line that caused it.
"""

from __future__ import annotations

import difflib
import os
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from components.core.errors import ConfigError, Location
from components.core.profile_merge import OVERRIDES_DIR, available_profiles, closest_profile, read_raw
from components.core.profile_models import (
    ClusterProfile,
    JumpHost,
    PartitionClass,
    PathSettings,
    RaySettings,
    SlurmSettings,
    SSHSettings,
    from_environment,
    relative,
)
from components.core.project import load_settings
from components.core.units import parse_time_s
from components.core.yamlio import KeyPath, dotted

__all__ = [
    "CLUSTER_ENV_VAR", "DEFAULT_CLUSTER", "FORCE_CLUSTER_ENV_VAR", "OVERRIDES_DIR", "TEMPLATES_DIR",
    "ClusterProfile", "JumpHost", "PartitionClass", "PathSettings", "RaySettings", "SSHSettings", "SlurmSettings",
    "available_profiles", "from_environment", "load_profile", "resolve_cluster_name",
]

CLUSTER_ENV_VAR = "HPC_CLUSTER"
# Wins over every asset's own `cluster:` too: "run everything here", as a project's local tests need.
FORCE_CLUSTER_ENV_VAR = "HPC_FORCE_CLUSTER"
DEFAULT_CLUSTER = "local"
TEMPLATES_DIR = "templates"


def load_profile(name: str, clusters_dir: Path) -> ClusterProfile:
    """Load, merge and validate clusters/<name>.yaml; raise ConfigError naming the file and line."""
    data, origins = read_raw(clusters_dir, name, ())
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
    "int_type": "write a whole number, such as 22",
    "int_parsing": "write a whole number, such as 22",
    "int_from_float": "write a whole number, such as 22",
    "bool_type": "write true or false",
    "bool_parsing": "write true or false",
    "string_type": "write text; quote it if YAML would read it as something else (\"01:00:00\", \"no\")",
    "list_type": "write a list: [a, b], or one '- item' per line",
    "dict_type": "write a mapping: keys indented under this one (see clusters/README.md for this section)",
    "model_type": "write a mapping: keys indented under this one (see clusters/README.md for this section)",
    "greater_than_equal": "use a value in the range the message gives",
    "less_than_equal": "use a value in the range the message gives",
    "value_error": "correct the value as the message says",
}


def _first_error(exc: ValidationError, where) -> ConfigError:
    error = exc.errors()[0]
    loc = tuple(str(p) if not isinstance(p, int) else p for p in error["loc"])
    message = error["msg"].removeprefix("Value error, ")
    fix = _FIXES.get(error["type"])
    if error["type"] == "extra_forbidden":
        message = f"unknown key {loc[-1]!r}"
        accepted = _accepted_keys(loc[:-1])
        near = difflib.get_close_matches(str(loc[-1]), accepted, n=1, cutoff=0.6)
        if accepted:
            fix = (f"did you mean {near[0]!r}? " if near else "") + f"this section accepts: {', '.join(accepted)}"
    elif error["type"] == "missing":
        message = f"required key {loc[-1]!r} is missing"
    elif "input" in error and not isinstance(error["input"], dict | list):
        message = f"{message} (got {error['input']!r})"
        expected = (error.get("ctx") or {}).get("expected", "")
        if error["type"] == "literal_error":
            choices = [c.strip("' ") for c in expected.replace(" or ", ",").split(",") if c.strip("' ")]
            near = difflib.get_close_matches(str(error["input"]), choices, n=1, cutoff=0.6)
            fix = f"did you mean {near[0]!r}?" if near else f"use one of: {', '.join(choices)}"
    return ConfigError(message, fix=fix, location=where(loc))


def _accepted_keys(path: tuple) -> list[str]:
    """The keys the profile section at `path` accepts (for a 'did you mean'); [] where it is not a model."""
    annotation: Any = ClusterProfile
    for part in path:
        model = _model(annotation)
        if model is not None and str(part) in model.model_fields:
            annotation = model.model_fields[str(part)].annotation
        else:  # a name under a mapping (slurm.partitions.<class>) or a list index: its value type
            args = typing.get_args(annotation)
            annotation = args[-1] if args else None
    model = _model(annotation)
    return [name for name, field in model.model_fields.items() if not field.exclude] if model else []


def _model(annotation: Any) -> type[BaseModel] | None:
    """The model in `X` or `X | None`; None for anything else."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return next((m for m in map(_model, typing.get_args(annotation)) if m is not None), None)
    return None


def _check_semantics(profile: ClusterProfile, clusters_dir: Path, where) -> None:
    template = clusters_dir / TEMPLATES_DIR / profile.template
    if not template.is_file():
        raise ConfigError(
            f"template {profile.template!r} not found in {relative(clusters_dir / TEMPLATES_DIR)}",
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

    Raises ConfigError when a name from the environment or pyproject.toml has no profile in clusters/;
    a name from a variable carries Location(variable=...), so that no defs.yaml is blamed for it.
    """
    for variable in (FORCE_CLUSTER_ENV_VAR, None, CLUSTER_ENV_VAR):
        if variable is None:
            if explicit:
                return explicit
            continue
        value = os.environ.get(variable)
        if value:
            if project_root is not None:
                _known(value, Path(project_root) / "clusters", f"${variable}={value} names no profile",
                       f"the name comes from the environment variable {variable}: unset {variable} or set it to",
                       Location(variable=variable))
            return value
    settings = load_settings(project_root)
    if settings.cluster:
        _known(settings.cluster, Path(project_root) / "clusters", f"the project's default cluster {settings.cluster!r} has no profile",
               "set [tool.hpc] cluster in pyproject.toml to", settings.location("cluster"))
        return settings.cluster
    return DEFAULT_CLUSTER


def _known(name: str, clusters_dir: Path, problem: str, fix: str, location: Location) -> None:
    if not (clusters_dir / f"{name}.yaml").is_file():
        near = closest_profile(name, clusters_dir)
        guess = f"did you mean {near}? " if near else ""
        names = ", ".join(available_profiles(clusters_dir)) or "none"
        raise ConfigError(f"{problem} (no {relative(clusters_dir / (name + '.yaml'))})",
                          fix=f"{guess}{fix} one of: {names}; or add clusters/{name}.yaml", location=location)
