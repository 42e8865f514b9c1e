"""`hpc doctor` checks of the login node itself: storage, quota and environment modules."""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from components.core.doctor_report import CheckResult, failed, one_line, passed
from components.core.shell import quote_path
from components.core.ssh import CommandResult

if TYPE_CHECKING:
    from components.core.doctor import Context

Runner = Callable[[str], CommandResult]

# Resolve a profile path as the login shell does ($DATA, $WORK come from site profile scripts), then
# make sure it exists or can be made, and that a file can be created and deleted in it. Directories
# the probe had to create are removed again: the first real job creates them with its own modes.
_STORAGE_PROBE = r"""
v=$(bash -lc {variable} </dev/null 2>/dev/null)
[ -n "$v" ] || {{ echo '@@unset'; exit 0; }}
d=$(bash -lc {expand} </dev/null 2>/dev/null)
case "$d" in /*) ;; *) printf '@@expand %s\n' "$d"; exit 0 ;; esac
printf '@@path %s\n' "$d"
top=; p=$d
while [ ! -e "$p" ] && [ ! -L "$p" ]; do top=$p; p=$(dirname -- "$p"); done
if [ -n "$top" ] && ! err=$(mkdir -p -- "$d" 2>&1); then printf '@@nocreate %s\n' "$err"; exit 0; fi
if [ ! -d "$d" ]; then echo '@@notdir'; exit 0; fi
probe="$d/.hpc-doctor-probe.$$"
if err=$( (umask 077; : > "$probe") 2>&1 ); then rm -f -- "$probe"; echo '@@writable'; else printf '@@notwritable %s\n' "$err"; fi
if [ -n "$top" ]; then q=$d; while rmdir -- "$q" 2>/dev/null && [ "$q" != "$top" ]; do q=$(dirname -- "$q"); done; echo '@@created'; fi
"""


_LEADING_VARIABLE = re.compile(r"^\$(?:\{(\w+)\}|(\w+))")


def parse_markers(text: str) -> dict[str, str]:
    """'@@key value' lines -> {key: value}; the text after a marker line up to the next belongs to it."""
    found: dict[str, str] = {}
    key = None
    for line in text.splitlines():
        if line.startswith("@@"):
            key, _, value = line[2:].partition(" ")
            found[key] = value
        elif key is not None:
            found[key] = (found[key] + "\n" + line) if found[key] else line
    return found


def check_storage(ctx: Context) -> list[CheckResult]:
    profile = ctx.profile
    assert profile is not None
    paths = profile.paths
    data_key = ("paths", "data_dir") if paths.data_dir else ("paths", "base_dir")
    results = []
    for check, path, key in (("base dir", paths.base_dir, ("paths", "base_dir")), ("data dir", paths.effective_data_dir(), data_key)):
        expand = shlex.quote(f"printf %s {quote_path(path)}")
        variable = _LEADING_VARIABLE.match(path)
        name = variable and (variable.group(1) or variable.group(2))
        answer = ctx.run(_STORAGE_PROBE.format(expand=expand, variable=shlex.quote(f'printf %s "${{{name}}}"' if name else "printf /")))
        results.append(_storage_result(check, path, profile.source(*key), parse_markers(answer.stdout), answer))
        if check == "base dir" and results[-1].ok:
            ctx.facts["base_dir"] = parse_markers(answer.stdout)["path"].strip()
    return results


def _storage_result(check: str, setting: str, source: str, marks: dict[str, str], answer: CommandResult) -> CheckResult:
    fix = (f"set {source.split()[-1]} ({source}) to a directory you can write (under $HOME, $WORK or $SCRATCH: "
           "see the site's storage documentation), or ask the site for space")
    path = marks.get("path", "").strip()
    if "unset" in marks:
        variable = _LEADING_VARIABLE.match(setting)
        return failed(check, f"{setting}: ${(variable.group(1) or variable.group(2)) if variable else '?'} is not set in the login shell on the cluster",
                      f"set {source.split()[-1]} ({source}) with a variable the site defines ($HOME, $WORK, $SCRATCH, ...) or an absolute path")
    if "expand" in marks:
        return failed(check, f"{setting} expands to {marks['expand'].strip()!r} in the login shell, not an absolute path",
                      "use an absolute path or a variable the site's login shell defines ($HOME, $WORK, $SCRATCH, ...)")
    if "nocreate" in marks:
        return failed(check, f"{path} does not exist and cannot be created: {one_line(marks['nocreate'])}", fix)
    if "notdir" in marks:
        return failed(check, f"{path} exists but is not a directory", fix)
    if "notwritable" in marks:
        error = re.sub(r"^(bash: )?line \d+: ", "", one_line(marks["notwritable"]))  # the probe's shell, not the user's
        return failed(check, f"{path} exists but is not writable: {error}", fix)
    if "writable" not in marks:
        return failed(check, f"the probe of {setting} gave no answer (exit {answer.exit_code}): {one_line(answer.stderr)}",
                      "re-run; if it persists, check the login shell start-up files on the cluster")
    how = "does not exist yet, can be created (made and removed again)" if "created" in marks else "exists"
    return passed(check, f"{path} ({setting}) {how} and is writable")


_QUOTA_PROBE = r"""
dir={dir}; [ -d "$dir" ] || dir=$HOME
if command -v lfs >/dev/null 2>&1; then echo '@@lfs'; timeout 20 lfs quota -h -u "$USER" "$dir" 2>&1; fi
if command -v quota >/dev/null 2>&1; then echo '@@quota'; timeout 20 quota -s 2>&1; fi
if command -v mmlsquota >/dev/null 2>&1; then echo '@@mmlsquota'; timeout 20 mmlsquota 2>&1; fi
"""
_OVER_LIMIT = re.compile(r"^\d[\d.]*[kKMGTP]?\*$")


def check_quota(ctx: Context) -> list[CheckResult]:
    """Report quota where the site has a tool for it; never a failure for its absence."""
    directory = ctx.facts.get("base_dir")
    answer = ctx.run(_QUOTA_PROBE.format(dir=shlex.quote(directory) if directory else '"$HOME"'))
    marks = parse_markers(answer.stdout)
    if not marks:
        return [passed("quota", "no quota tool on the login node (lfs, quota, mmlsquota): not checked")]
    over = [tool for tool, text in marks.items() if any(_OVER_LIMIT.match(f) for f in text.split())]
    report = "; ".join(f"{tool}: {one_line(text, 200) or '(no output)'}" for tool, text in marks.items())
    if over:
        return [failed("quota", f"over quota ({', '.join(over)} marks a limit exceeded with *): {report}",
                       "free space in the base/data dir, or ask the site for more")]
    return [passed("quota", report)]


def check_profile_modules(ctx: Context) -> list[CheckResult]:
    profile = ctx.profile
    assert profile is not None
    return [check_modules(ctx.run, profile.environment.modules, source=profile.source("environment", "modules"))]


def check_modules(run: Runner, modules: Sequence[str], *, check: str = "modules", source: str = "environment.modules",
                  init: str = "/etc/profile") -> CheckResult:
    """Load `modules` in order after `module purge` on the login node; report each that fails with module's own message.

    `run(command)` runs a shell command on the login node, bounded in time, without raising on a
    non-zero exit (Context.run, or `lambda c: transport.run(c, check=False, timeout=60)`).
    `init` is sourced when a plain shell has no `module` (as batch jobs do). Module names are
    validated by the profile and quoted here.
    """
    if not modules:
        return passed(check, "none to load (environment.modules is empty)")
    q = shlex.quote
    script = [
        f"command -v module >/dev/null 2>&1 || source {q(init)} >/dev/null 2>&1",
        "command -v module >/dev/null 2>&1 || { echo '@@no-module'; exit 0; }",
        "module purge >/dev/null 2>&1",
    ]
    for index, name in enumerate(modules):
        script.append(f"echo '@@load{index}'; module load {q(name)} 2>&1; echo \"@@rc{index} $?\"")
    answer = run("\n".join(script))
    marks = parse_markers(answer.stdout)
    names = ", ".join(modules)
    if "no-module" in marks:
        return failed(check, f"the login node has no `module` command (not in a plain shell, nor after sourcing {init}), "
                             f"but {source} asks for: {names}",
                      "remove environment.modules from the profile, or ask the site how batch shells enable modules (Lmod)")
    problems = []
    for index, name in enumerate(modules):
        if f"rc{index}" not in marks:
            problems.append(f"{name}: no answer (exit {answer.exit_code}: {one_line(answer.stderr, 200)})")
            break
        output, rc = marks.get(f"load{index}", ""), marks[f"rc{index}"].strip()
        error = module_error(output)
        if rc != "0" or error:
            problems.append(f"{name}: {error or one_line(output, 200) or f'module load exited {rc}'}")
    if problems:
        return failed(check, "; ".join(problems),
                      f"correct {source}; `module avail <name>` or `module spider <name>` on the login node lists what exists")
    return passed(check, f"loaded after module purge: {names}")


def module_error(output: str) -> str:
    """The line of `module load` output that says what went wrong (Lmod, Environment Modules), or ''."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for index, line in enumerate(lines):
        if re.search(r"error|unknown|unable to locate|not found|cannot", line, re.IGNORECASE):
            # Lmod puts the module's name on the next line: "... are unknown:" / '"foo"'.
            if line.endswith(":") and index + 1 < len(lines):
                return f"{line} {lines[index + 1]}"
            return line
    return ""
