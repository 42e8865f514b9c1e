"""What the `hpc` CLI prints for a mistake the user can fix: one message naming the file, never a traceback.

`user_message` decides what counts as such a mistake (a ConfigError, an OSError on a path, invalid
TOML, a component that fails to load); anything else is an internal error and keeps its traceback.
"""

from __future__ import annotations

import errno
import re
import tomllib
import traceback
from pathlib import Path

from components.core.errors import ConfigError, Location

# dagster's ResolutionException for {{ env('NAME') }} without a default.
_UNSET_ENV = re.compile(r"Environment variable (\w+) is not set and no default value was provided")

# What to do about an OSError on a user's path, by errno.
_OS_FIXES = {
    errno.ENOENT: "check the path: it (or a folder above it) does not exist",
    errno.EACCES: "check the permissions of the path and of the folders above it, or choose a path you can write",
    errno.EPERM: "check the permissions of the path and of the folders above it, or choose a path you can write",
    errno.ENOTDIR: "a part of the path that should be a folder is a file: rename that file or choose another path",
    errno.EISDIR: "the path is a folder where a file is expected: give a file",
    errno.EROFS: "the file system is read-only: choose a path on a writable one",
    errno.ENOSPC: "the disk is full: free space or choose another disk",
    errno.EEXIST: "something with that name is in the way: remove or rename it",
}


def user_message(exc: BaseException) -> str | None:
    """The text to print for a user's mistake (without 'error: '), or None for an internal error."""
    if isinstance(exc, ConfigError):
        return str(exc)
    from components.core.ssh_target import TransportError

    if isinstance(exc, TransportError):  # a refused host key or login, an unreachable node: the message says what to do
        return str(exc)
    if isinstance(exc, tomllib.TOMLDecodeError) or _is_tomlkit_error(exc):
        return (f"a TOML file of the project is not valid: {exc}\n"
                "  fix: correct it at that line and column (pyproject.toml or dg.toml; a string needs both quotes)")
    if isinstance(exc, OSError) and exc.filename:
        return str(os_error(exc))
    if type(exc).__name__ == "ComponentTreeException":
        # Normally placed by load_error, which knows the component's file; here at least its cause.
        cause = _innermost(exc)
        if cause is not exc:
            return user_message(cause) or f"a component failed to load: {type(cause).__name__}: {cause}"
    if type(exc).__module__.startswith(("dagster", "pydantic")) and str(exc).strip():
        return str(exc)
    return None


def os_error(exc: OSError) -> ConfigError:
    """An OSError on a path as a ConfigError naming the path, what went wrong and what to do."""
    where = _shown(Path(exc.filename)) if exc.filename else "a path"
    return ConfigError(f"cannot use {where}: {exc.strerror or exc}",
                       fix=_OS_FIXES.get(exc.errno, "check the path and its permissions"))


def load_error(exc: BaseException, defs_file: Path) -> ConfigError | None:
    """Why the component in `defs_file` did not load, from the cause dagster wraps ('Error while loading component').

    A ConfigError keeps its own file:line; any other cause is shown as its type and message, at defs_file, with
    the source line that raised it. None when `exc` is not a load failure.
    """
    if type(exc).__name__ != "ComponentTreeException":
        return None
    cause = _innermost(exc)
    if cause is exc:
        return ConfigError("the component failed to load, and dagster gave no cause",
                           fix="run `dg check defs --verbose` for dagster's full report",
                           location=Location(file=defs_file))
    if isinstance(cause, ConfigError):
        return cause if cause.location.file is not None else cause.at(Location(file=defs_file))
    unset = _UNSET_ENV.search(str(cause))
    if unset:
        name = unset.group(1)
        return ConfigError(
            f"environment variable {name} is not set, and this component reads it without a default",
            fix=f"export {name}, or add {name}=... to the project's .env (hpc and dg read it), "
                f"or give a default: {{{{ env('{name}', 'value') }}}}",
            location=Location(file=defs_file, line=_line_naming(defs_file, name)))
    text = user_message(cause)
    if text is not None:
        return ConfigError(f"while loading this component: {text}", location=Location(file=defs_file))
    frames = traceback.extract_tb(cause.__traceback__)
    raised_at = f" (raised at {_shown(Path(frames[-1].filename))}:{frames[-1].lineno})" if frames else ""
    return ConfigError(f"the component failed to load: {type(cause).__name__}: {cause}{raised_at}",
                       fix="correct the attribute the message names; if it names none, the component's code failed on this input",
                       location=Location(file=defs_file))


def _line_naming(file: Path, name: str) -> int | None:
    """The first line of `file` whose template mentions `name`; dagster's message gives none."""
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    return next((n for n, line in enumerate(lines, 1) if "{{" in line and re.search(rf"\b{re.escape(name)}\b", line)), None)


def _innermost(exc: BaseException) -> BaseException:
    """The first cause in the chain that is not one of dagster's 'while loading' wrappers."""
    seen = {id(exc)}
    current = exc
    while type(current).__name__ == "ComponentTreeException":
        nxt = current.__cause__ or current.__context__
        if nxt is None or id(nxt) in seen:
            break
        seen.add(id(nxt))
        current = nxt
    return current


def _is_tomlkit_error(exc: BaseException) -> bool:
    # dagster reads pyproject.toml and dg.toml with tomlkit; its ParseError is a ValueError subclass.
    return type(exc).__module__.startswith("tomlkit")


def _shown(path: Path) -> str:
    return str(Location(file=path))
