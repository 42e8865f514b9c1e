"""The project's `.env` file, read as `dg` reads it, so that `hpc` sees the same variables.

dagster's CLI reads `<project root>/.env` with python-dotenv's `dotenv_values`, drops names without a
value, and sets the rest over the shell's environment for the duration of the command
(dagster._cli.utils._inject_local_env_file). `applied` does the same.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dotenv import dotenv_values

from components.core.errors import ConfigError, Location

ENV_FILE = ".env"


def read_env_file(project_root: Path) -> dict[str, str]:
    """NAME -> value from `<project_root>/.env`; {} when there is none. Raises ConfigError when it cannot be read."""
    file = Path(project_root) / ENV_FILE
    if not file.is_file():
        return {}
    try:
        values = dotenv_values(file, encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(f"cannot read {ENV_FILE}: {reason}",
                          fix="make it a readable UTF-8 file of NAME=value lines, or remove it",
                          location=Location(file=file)) from None
    return {name: value for name, value in values.items() if value is not None}


@contextmanager
def applied(project_root: Path) -> Iterator[dict[str, str]]:
    """Set the variables of `.env` over os.environ inside the block, then restore the environment as it was."""
    values = read_env_file(project_root)
    before = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield values
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
