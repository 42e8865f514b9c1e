"""Project-wide settings: the `[tool.hpc]` table of pyproject.toml.

    [tool.hpc]
    cluster = "vsc5"             # profile for every asset without its own `cluster:`; $HPC_CLUSTER wins
    user_env = "HPC_USER"        # login name on any cluster, when the profile's own ssh.user_env is unset
    account_env = "HPC_ACCOUNT"  # Slurm account on any cluster, when the profile's slurm.account_env is unset
    allocation = "run"           # steps of a run share one Slurm allocation, unless an asset's submission.allocation says job

The table is optional; a project without it runs everything locally.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

from components.core import shell
from components.core.errors import ConfigError, Location

PYPROJECT = "pyproject.toml"
TABLE = "tool.hpc"
_KEYS = ("cluster", "user_env", "account_env", "allocation")
_ALLOCATIONS = ("job", "run")
_PROFILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class ProjectSettings:
    cluster: str | None = None
    user_env: str | None = None
    account_env: str | None = None
    allocation: str | None = None
    file: Path | None = None
    lines: tuple[tuple[str, int], ...] = ()

    def location(self, key: str) -> Location:
        return Location(file=self.file, line=dict(self.lines).get(key), key=f"{TABLE}.{key}")


def load_settings(project_root: Path | None) -> ProjectSettings:
    """[tool.hpc] of the project's pyproject.toml; empty settings where there is none."""
    if project_root is None:
        return ProjectSettings()
    file = Path(project_root) / PYPROJECT
    try:
        stamp = file.stat().st_mtime_ns
    except FileNotFoundError:
        return ProjectSettings()
    return _load(file.resolve(), stamp)


@lru_cache(maxsize=16)
def _load(file: Path, _stamp: int) -> ProjectSettings:
    text, document = read_toml(file)
    table = document.get("tool", {}).get("hpc", {})
    settings = ProjectSettings(file=file, lines=tuple(_key_lines(text).items()))  # positions for errors
    if not isinstance(table, dict):
        raise ConfigError(f"[{TABLE}] must be a table", location=Location(file=file),
                          fix=f'write it as a table: a line [{TABLE}], then lines such as cluster = "vsc5"')
    for key, value in table.items():
        where = settings.location(key)
        if key not in _KEYS:
            near = difflib.get_close_matches(key, _KEYS, n=1)
            hint = f"did you mean {near[0]!r}? " if near else ""
            raise ConfigError(f"unknown key {key!r} in [{TABLE}]", fix=f"{hint}use one of: {', '.join(_KEYS)}", location=where)
        if not isinstance(value, str) or not value:
            raise ConfigError(f"[{TABLE}] {key} must be a non-empty string", location=where)
    cluster = table.get("cluster")
    if cluster is not None and not _PROFILE_NAME.match(cluster):
        raise ConfigError(f"cluster {cluster!r} is not a profile name",
                          fix="name a file in clusters/ without .yaml, such as vsc5", location=settings.location("cluster"))
    allocation = table.get("allocation")
    if allocation is not None and allocation not in _ALLOCATIONS:
        raise ConfigError(f"allocation {allocation!r} is not one of {', '.join(_ALLOCATIONS)}",
                          fix='write allocation = "run" (steps of a run share one allocation) or "job" (a job per step)',
                          location=settings.location("allocation"))
    envs = {}
    for key in ("user_env", "account_env"):
        if key in table:
            try:
                envs[key] = shell.check_env_name(table[key])
            except ValueError as exc:
                raise ConfigError(str(exc), fix="use a variable name such as HPC_USER", location=settings.location(key)) from None
    return replace(settings, cluster=cluster, allocation=allocation, **envs)


def read_toml(file: Path) -> tuple[str, dict]:
    """(text, parsed table) of a TOML file. Raises ConfigError naming the file, line and column of a syntax
    error, or why the file cannot be read."""
    try:
        text = Path(file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(f"cannot read {Path(file).name}: {reason}", fix="make it a readable UTF-8 file",
                          location=Location(file=file)) from None
    try:
        return text, tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        where = re.search(r"\s*\(at line (\d+), column (\d+)\)", str(exc))
        what = str(exc)[: where.start()] if where else str(exc)
        line, column = (int(where.group(1)), int(where.group(2))) if where else (None, None)
        at = f" at column {column}" if column else ""
        raise ConfigError(
            f"not valid TOML{at}: {what}",
            fix="correct that line: usually a string without its closing quote, a text value without quotes, "
                "or a key without '='",
            location=Location(file=file, line=line)) from None


def _key_lines(text: str) -> dict[str, int]:
    """Line of each key in [tool.hpc], for error messages (tomllib keeps no positions)."""
    lines: dict[str, int] = {}
    inside = False
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if stripped.startswith("["):
            inside = stripped.replace(" ", "") == f"[{TABLE}]"
            continue
        match = re.match(r"([A-Za-z0-9_-]+)\s*=", stripped)
        if inside and match:
            lines.setdefault(match.group(1), number)
    return lines
