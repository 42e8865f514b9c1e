"""One error type for everything a user can get wrong in YAML.

Every message names where the problem is (file, line, key), what is wrong and what to do,
so that `dg check defs` and the `hpc` CLI can print it without a traceback.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class Location:
    file: Path | None = None
    line: int | None = None
    key: str | None = None
    # The environment variable a bad value came from: no file holds it, so none may be blamed
    # (the message itself names the variable).
    variable: str | None = None

    def __str__(self) -> str:
        where = ""
        if self.file is not None:
            where = _display_path(self.file)
            if self.line is not None:
                where += f":{self.line}"
        if self.key:
            where = f"{where} [{self.key}]" if where else f"[{self.key}]"
        return where


def _display_path(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


class ConfigError(ValueError):
    """Bad user input in a YAML file: component attributes or a cluster profile."""

    def __init__(self, problem: str, *, fix: str | None = None, location: Location | None = None):
        self.problem = problem
        self.fix = fix
        self.location = location or Location()
        super().__init__(self._format())

    def _format(self) -> str:
        where = str(self.location)
        text = f"{where}: {self.problem}" if where else self.problem
        if self.fix:
            text += f"\n  fix: {self.fix}"
        return text

    def at(self, location: Location) -> ConfigError:
        """Same error, placed at a location that the raiser could not know."""
        merged = Location(
            file=self.location.file or location.file,
            line=self.location.line or location.line,
            key=self.location.key or location.key,
            variable=self.location.variable or location.variable,
        )
        return ConfigError(self.problem, fix=self.fix, location=merged)
