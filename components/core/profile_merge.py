"""Reading a cluster profile's YAML: `extends:` chains (deep merge, lists replaced) and the project's
clusters/overrides/<name>.yaml, keeping the file and line every key came from.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from components.core.errors import ConfigError, Location
from components.core.profile_models import relative
from components.core.yamlio import KeyPath, LineMap, load_yaml

OVERRIDES_DIR = "overrides"


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
    """Names of the profiles in `clusters_dir` (its *.yaml files without the suffix), sorted."""
    return sorted(p.stem for p in Path(clusters_dir).glob("*.yaml"))


def closest_profile(name: str, clusters_dir: Path) -> str | None:
    """The profile whose name is nearest to `name` (a typo's likely target), or None when none is close."""
    near = difflib.get_close_matches(name, available_profiles(clusters_dir), n=1, cutoff=0.6)
    return near[0] if near else None


def profile_choices(name: str, clusters_dir: Path) -> str:
    """'did you mean X? use one of: a, b, c' for a name that has no profile; the hint only when one is close."""
    near = closest_profile(name, clusters_dir)
    hint = f"did you mean {near}? " if near else ""
    return f"{hint}use one of: {', '.join(available_profiles(clusters_dir)) or 'none (clusters/ has no profile)'}"


def read_raw(clusters_dir: Path, name: str, chain: tuple[str, ...]) -> tuple[dict, dict]:
    """Profile `name` merged over its `extends:` chain and under its override: (data, {key path: (file, line)}).

    `chain` holds the profiles that extend this one (to find cycles). Raises ConfigError with file:line.
    """
    file = Path(clusters_dir) / f"{name}.yaml"
    if file.exists() and not file.is_file():
        raise ConfigError("this is a folder, not a profile file", fix="a profile is one YAML file: remove or rename the folder",
                          location=Location(file=file))
    if not file.is_file():
        raise ConfigError(
            f"unknown cluster {name!r}: there is no {relative(file)}",
            fix=f"{profile_choices(name, clusters_dir)}; or add clusters/{name}.yaml (see clusters/README.md)",
        )
    data, lines = load_yaml(file)
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError("a cluster profile must be a mapping of keys", location=Location(file=file, line=1))
    origins = _origins(lines)
    parent = data.get("extends")
    if parent is not None:
        if not isinstance(parent, str):
            raise ConfigError(f"extends must be a profile name, not {parent!r}",
                              fix=f"name one profile to start from; {profile_choices(str(parent), clusters_dir)}",
                              location=lines.location(("extends",)))
        if parent in (*chain, name):
            cycle = " -> ".join((*chain, name, parent))
            raise ConfigError(
                f"profiles extend each other in a cycle: {cycle}",
                fix=f"remove `extends: {parent}` here, or the `extends:` of another profile in the cycle, so that the chain "
                    "ends at a profile without extends (usually a shipped one such as vsc5 or leonardo)",
                location=lines.location(("extends",)))
        try:
            base, base_origins = read_raw(clusters_dir, parent, (*chain, name))
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
                raise ConfigError("a profile override must be a mapping", location=Location(file=override, line=1),
                                  fix="write the keys to change, as in the profile itself (for example `slurm:` then `account_env: MY_ACCOUNT`)")
            if "extends" in extra:  # merged after the chain was read, it would be dropped without a word
                raise ConfigError("an override cannot change what a profile extends",
                                  fix="remove extends: here; to start from another profile, write a new clusters/<name>.yaml "
                                      "with extends: and the keys that differ",
                                  location=extra_lines.location(("extends",)))
            out = dict(origins)
            data = _deep_merge(data, extra, origins, _origins(extra_lines), (), out)
            origins = out
    return data, origins


