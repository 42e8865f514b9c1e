"""The project's workload components, loaded from defs/ as `dg` loads them, for the `hpc` CLI.

Lives at the top of the package (not in core/) because it needs the components themselves.
"""

from __future__ import annotations

import difflib
from pathlib import Path

from components.core.environments import JobEnvironment, env_dir
from components.core.errors import ConfigError

DEFS_DIR = "defs"


def find_project_root(start: Path) -> Path:
    """The nearest directory at or above `start` with pyproject.toml and clusters/. Raises ConfigError."""
    for candidate in (start, *start.parents):
        if (candidate / "pyproject.toml").is_file() and (candidate / "clusters").is_dir():
            return candidate
    raise ConfigError(
        f"no project found at or above {start}",
        fix="run hpc inside a project (a directory with pyproject.toml and clusters/)",
    )


def workload_defs_file(project_root: Path, target: str) -> Path:
    """defs.yaml of the component folder `target` (defs/numbers, numbers or .../defs.yaml). Raises ConfigError."""
    return project_root / DEFS_DIR / _folder(project_root, target) / "defs.yaml"


def load_workload(project_root: Path, target: str):
    """The WorkloadComponent in the folder `target` (defs/numbers, numbers or .../defs.yaml).

    Raises ConfigError; when the component fails to load, the error is its own cause (file:line), not
    dagster's 'Error while loading component' tree.
    """
    import dagster as dg

    from components.workload import WorkloadComponent

    relative = _folder(project_root, target)
    # dagster resolves every defs.yaml of the tree, so one bad file elsewhere stops this one too:
    # say which file and why, as `dg check defs` does, instead of dagster's bare attribute error.
    from components.defs_check import defs_error

    problem = defs_error(project_root)
    if problem is not None:
        raise problem
    component = _loaded(dg.ComponentTree.for_project(project_root), relative, project_root / DEFS_DIR / relative / "defs.yaml")
    if not isinstance(component, WorkloadComponent):
        raise ConfigError(
            f"defs/{relative} is a {type(component).__name__}, not a component that runs a workload",
            fix="point hpc render at a SlurmAssetComponent or MetaxyFeatureComponent instance",
        )
    return component


def _loaded(tree, relative: Path, defs_file: Path):
    """The component at `relative`; a load failure raised as its own cause (ConfigError at defs_file)."""
    from components.cli_errors import load_error

    try:
        return tree.load_component(relative)
    except Exception as exc:
        error = load_error(exc, defs_file)
        if error is None:
            raise
        raise error from None


def _folder(project_root: Path, target: str) -> Path:
    path = Path(target)
    if path.name == "defs.yaml":
        path = path.parent
    defs_root = project_root / DEFS_DIR
    absolute = path if path.is_absolute() else (Path.cwd() / path)
    try:
        relative = absolute.resolve().relative_to(defs_root.resolve())
    except ValueError:
        relative = Path(target)  # already relative to defs/
    folders = _component_folders(defs_root)
    if str(relative) not in folders:
        known = (defs_root / relative).is_dir()
        near = difflib.get_close_matches(str(relative), folders, n=1, cutoff=0.6)
        hint = f"did you mean {DEFS_DIR}/{near[0]}? " if near else ""
        listing = ", ".join(f"{DEFS_DIR}/{f}" for f in folders) or "none yet"
        raise ConfigError(
            f"{target} has no defs.yaml" if known else f"{target} is not a folder under defs/",
            fix=f"{hint}give a component folder (one with a defs.yaml): {listing}",
        )
    return relative


def _component_folders(defs_root: Path) -> list[str]:
    """Folders under defs/ that declare a component, relative to defs/."""
    return sorted(str(f.parent.relative_to(defs_root)) for f in defs_root.rglob("defs.yaml") if f.parent != defs_root)


def workload_components(project_root: Path) -> list[tuple[str, object]]:
    """(folder under defs/, component) for every workload component of the project, in path order."""
    import dagster as dg

    from components.workload import WorkloadComponent

    from components.defs_check import defs_error

    error = defs_error(project_root)
    if error is not None:
        raise error
    tree = dg.ComponentTree.for_project(project_root)
    found = []
    for defs_yaml in sorted((project_root / DEFS_DIR).rglob("defs.yaml")):
        relative = defs_yaml.parent.relative_to(project_root / DEFS_DIR)
        component = _loaded(tree, relative, defs_yaml)
        if isinstance(component, WorkloadComponent):
            found.append((str(relative), component))
    return found


def job_environments(project_root: Path, cluster: str) -> list[JobEnvironment]:
    """The distinct job environments the project's workloads need on `cluster`, with what each must import.

    Components that build the same environment (same requirements, modules and Python) share one
    entry whose imports are the union of theirs.
    """
    merged: dict[str | None, JobEnvironment] = {}
    from components.workload import _placed

    for name, component in workload_components(project_root):
        try:
            profile = component.get_profile(project_root, cluster)
            imports = tuple(dict.fromkeys(component.environment_imports(project_root)))
        except ValueError as exc:  # ConfigError and the core's value errors: at the component's defs.yaml line
            raise _placed(exc, project_root / DEFS_DIR / name / "defs.yaml") from None
        if profile.scheduler != "slurm":
            continue
        key = env_dir(profile, project_root) or profile.environment.strategy
        known = merged.get(key)
        if known is None:
            merged[key] = JobEnvironment(profile, imports, (name,))
        else:
            merged[key] = JobEnvironment(known.profile, tuple(dict.fromkeys((*known.imports, *imports))), (*known.users, name))
    return list(merged.values())
