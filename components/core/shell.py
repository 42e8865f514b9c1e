"""Everything that puts a YAML value into a shell script goes through here.

Two tools: quoting (values that may be anything: env values, arguments, paths) and validation
(values that must keep a shape: variable names, module names, #SBATCH directives). A value that
contains `$(...)`, backticks, quotes or newlines is either quoted into inertness or rejected.
"""

from __future__ import annotations

import re
import shlex

from markupsafe import Markup


class ShellSafe(Markup):
    """A string already quoted or validated for the shell; the renderer inserts it verbatim.

    It is a Markup so that Jinja's autoescape machinery carries the "safe" mark through blocks and
    super(); the renderer swaps HTML escaping for shell quoting (see render._finalize).
    """


def quote(value: object) -> ShellSafe:
    return ShellSafe(shlex.quote(str(value)))


_VAR_PREFIX = re.compile(r"^\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)\}|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))")


def quote_path(path: str) -> ShellSafe:
    """Quote a path, letting one leading environment variable expand: `$WORK/x y` -> `"${WORK}"'/x y'`.

    Cluster base directories are written as `$DATA/...` or `$WORK/...`; only that leading
    variable is expanded, everything after it is literal.
    """
    if "\n" in path or "\r" in path or "\0" in path:
        raise ValueError(f"path {path!r} contains a newline or NUL byte")
    match = _VAR_PREFIX.match(path)
    if not match:
        return quote(path)
    name = match.group("braced") or match.group("bare")
    rest = path[match.end():]
    head = f'"${{{name}}}"'
    return ShellSafe(head + (shlex.quote(rest) if rest else ""))


_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def check_env_name(name: str) -> str:
    if not _ENV_NAME.match(name or ""):
        raise ValueError(
            f"environment variable name {name!r} is not valid: use letters, digits and '_', not starting with a digit"
        )
    return name


_MODULE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+/@%-]*$")


def check_module_name(name: str) -> str:
    if not _MODULE_NAME.match(name or ""):
        raise ValueError(
            f"module name {name!r} may only contain letters, digits and _ . + / @ % - "
            "(one module per list item)"
        )
    return name


_MODULE_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+/@%-]*(?:[*?][A-Za-z0-9_.+/@%*?-]*|\[[A-Za-z0-9_.-]+\][A-Za-z0-9_.+/@%*?-]*)*$")


def check_module_pattern(name: str) -> str:
    """A module name, or a glob over names (`python/3.12*`, `Python/3.1[123]*`) resolved on the cluster."""
    if not _MODULE_PATTERN.match(name or "") or "/" not in name and any(c in name for c in "*?["):
        raise ValueError(
            f"module {name!r} must be a module name (letters, digits and _ . + / @ % -) or a glob after "
            "the module's family, such as python/3.12* or Python/3.1[123]*"
        )
    return name


# A directive value may contain what Slurm's own syntax needs (gres lists, node lists,
# mail addresses, time specs) but nothing that a shell or sbatch's parser would treat specially.
_DIRECTIVE = re.compile(r"^--[a-z][a-z0-9-]*(=[A-Za-z0-9_.,:@%+/\[\]=-]+)?$")
_SHORT_DIRECTIVE = re.compile(r"^-[A-Za-z](?: ?[A-Za-z0-9_.,:@%+/\[\]=-]+)?$")


def check_directive(text: str) -> ShellSafe:
    """Validate one `#SBATCH` option such as `--constraint=a100` or `--exclusive`."""
    text = str(text).strip()
    if _DIRECTIVE.match(text) or _SHORT_DIRECTIVE.match(text):
        return ShellSafe(text)
    raise ValueError(
        f"sbatch directive {text!r} is not allowed: write one option per item as --name or --name=value, "
        "with the value made of letters, digits and _ . , : @ % + / [ ] = - only (no spaces, quotes, $ or newlines)"
    )


# sbatch options that would break how a job is followed: its files, its id, its single run.
# Long name -> (short letter, why).
UNFOLLOWABLE = {
    "array": ("a", "an array is made from the asset's partitions: declare partitions: (and submission.max_concurrent) instead"),
    "output": ("o", "the job's stdout must be slurm-%j.out in its job directory, where it is tailed"),
    "error": ("e", "the job's stderr must be slurm-%j.err in its job directory, where it is tailed"),
    "open-mode": (None, "output is appended so that a requeued job keeps the lines of every execution"),
    "chdir": ("D", "the job runs in its job directory; its paths are relative to it"),
    "parsable": (None, "the submission already reads the job id; sbatch options are not a place for it"),
    "wait": ("W", "the job is followed by polling; --wait would block the submission"),
    "dependency": ("d", "dependencies between assets are Dagster's: declare deps instead"),
    "kill-on-invalid-dep": (None, "dependencies between assets are Dagster's: declare deps instead"),
    "hold": ("H", "a held job would wait until its queue timeout"),
    "wrap": (None, "the job script is generated from the workload"),
    "test-only": (None, "use `hpc render --strict` to check a job without running it"),
}
_SHORT_UNFOLLOWABLE = {short: long for long, (short, _) in UNFOLLOWABLE.items() if short}


def check_extra_directive(text: str) -> ShellSafe:
    """An extra `#SBATCH` option from YAML: well-formed and not one that breaks following the job.

    Raises ValueError naming the option and why it is refused.
    """
    option = check_directive(text)
    if option.startswith("--"):
        name = option[2:].split("=", 1)[0]
    else:
        name = _SHORT_UNFOLLOWABLE.get(option[1], "")
    if name in UNFOLLOWABLE:
        raise ValueError(f"sbatch option {text!r} is refused: {UNFOLLOWABLE[name][1]}")
    return option


def check_line(line: str) -> ShellSafe:
    """A profile's set-up line is shell code by design; it must at least stay one line."""
    if "\n" in line or "\r" in line or "\0" in line:
        raise ValueError(f"set-up line {line!r} must be a single line: split it into several list items")
    return ShellSafe(line)


_JOB_NAME_BAD = re.compile(r"[^A-Za-z0-9_.-]+")


def job_name(text: str, limit: int = 64) -> ShellSafe:
    """Slurm job names are free text; ours are reduced to a safe, readable subset."""
    cleaned = _JOB_NAME_BAD.sub("_", text).strip("_.-") or "job"
    return ShellSafe(cleaned[:limit])
