"""Where the job's Python comes from, per profile: venv, preinstalled, pixi-pack or apptainer.

`activation()` and `notes()` are pure (previews show the exact lines); `prepare()` makes the
environment exist on the cluster. A venv is built on the login node (compute nodes are often
offline), from the locked requirements, with the Python of the site's module, under a lock, once
per content hash; it records the exact modules it was built with in `hpc-activate.sh`, which every
job sources. What a workload imports is checked on the login node before its first job.
"""

from __future__ import annotations

import hashlib
import re
import shlex
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from components.core import shell
from components.core.errors import ConfigError
from components.core.profiles import ClusterProfile
from components.core.render import Runtime
from components.core.ssh_target import RemoteCommandError

if TYPE_CHECKING:
    from components.core.ssh import Transport

ENVS_DIR = "envs"
ACTIVATE = "hpc-activate.sh"
PIPES = "dagster_pipes"
# The interpreters the locked requirements are resolved for (`make lock`: --python-version 3.11, universal).
PYTHON_RANGE = ((3, 11), (3, 14))
# The installer, as scripts/bootstrap.sh pins it for the local .venv.
UV_VERSION = "0.13.9"
# Bumped when what a build writes changes (hpc-activate.sh), so environments built before are rebuilt.
BUILD_FORMAT = "3"
BUILD_TIMEOUT_S = 1800
# Imports already verified in this process, per (transport target, environment dir).
_VERIFIED: set[tuple[object, str, frozenset[str]]] = set()
_VERIFIED_LOCK = threading.Lock()


def _read(path: Path) -> bytes:
    if not path.is_file():
        raise ConfigError(
            f"{path} does not exist",
            fix="create it (for venv: the locked requirements of your workloads, at least dagster-pipes)",
        )
    return path.read_bytes()


_CPU_TORCH = re.compile(r"^(\s*torch\s*==\s*[0-9][0-9.]*)\+cpu\b", re.MULTILINE)


def for_gpus(profile: ClusterProfile) -> ClusterProfile:
    """The profile a job that asks for GPUs builds its venv from: CUDA torch unless gpu_torch: as_locked."""
    env = profile.environment
    if env.strategy != "venv" or env.venv.gpu_torch == "as_locked":
        return profile
    venv = env.venv.model_copy(update={"for_gpus": True, "extra_index_urls": env.venv.gpu_extra_index_urls})
    return profile.model_copy(update={"environment": env.model_copy(update={"venv": venv})})


def venv_requirements(profile: ClusterProfile, project_root: Path) -> bytes:
    """The requirements the venv is built from: the file, with a `torch==X+cpu` pin made `torch==X`
    (PyPI's CUDA build) for GPU jobs. Raises ConfigError when the file is missing."""
    venv = profile.environment.venv
    text = _read(project_root / venv.requirements)
    if not venv.for_gpus:
        return text
    return _CPU_TORCH.sub(r"\1", text.decode()).encode()


def _venv_key(profile: ClusterProfile, project_root: Path) -> str:
    venv = profile.environment.venv
    digest = hashlib.sha256(venv_requirements(profile, project_root))
    # The modules and the interpreter are part of what defines the venv: a new Python is a new venv.
    digest.update("\0".join([BUILD_FORMAT, venv.python, *venv.modules, "--", *venv.extra_index_urls]).encode())
    return digest.hexdigest()[:16]


def env_dir(profile: ClusterProfile, project_root: Path) -> str | None:
    """Remote directory of the environment, relative to paths.base_dir; None when nothing is built."""
    env = profile.environment
    if env.strategy == "venv":
        return f"{ENVS_DIR}/venv-{_venv_key(profile, project_root)}"
    if env.strategy == "pixi_pack":
        assert env.pixi_pack is not None
        return f"{ENVS_DIR}/pixi-{hashlib.sha256(_read(project_root / env.pixi_pack.archive)).hexdigest()[:16]}"
    return None


def activation(profile: ClusterProfile, project_root: Path, base_dir: str | None = None) -> Runtime:
    """The Runtime lines for this profile's strategy; base_dir is the resolved remote path when known."""
    env = profile.environment
    base = shell.quote(base_dir) if base_dir else shell.quote_path(profile.paths.base_dir)
    rel = env_dir(profile, project_root)
    if env.strategy == "venv":
        # Loads the modules the venv was built with, then activates it: `python3` is the venv's own.
        return Runtime(setup=(shell.ShellSafe(f"source {base}/{shell.quote(rel + '/' + ACTIVATE)}"),))
    if env.strategy == "pixi_pack":
        return Runtime(python="python", setup=(shell.ShellSafe(f"source {base}/{shell.quote(rel + '/activate.sh')}"),))
    if env.strategy == "apptainer":
        assert env.apptainer is not None
        prefix = [shell.quote(env.apptainer.executable), "exec"]
        for bind in env.apptainer.bind:
            prefix += ["--bind", shell.quote(bind)]
        prefix.append(shell.quote_path(env.apptainer.image))
        return Runtime(launch_prefix=tuple(shell.ShellSafe(p) for p in prefix))
    return Runtime()


def notes(profile: ClusterProfile) -> list[str]:
    """One line for previews saying where the job's Python comes from."""
    env = profile.environment
    if env.strategy == "venv":
        modules = ", ".join(env.venv.modules) or "none"
        extra = f"; extra index {', '.join(env.venv.extra_index_urls)}" if env.venv.extra_index_urls else ""
        lines = [f"job environment: venv built on the login node from {env.venv.requirements} with {env.venv.python} "
                 f"of module(s) {modules}; exact module names are fixed in {ACTIVATE} at its first build{extra}"]
        if env.venv.for_gpus:
            lines.append("GPU job: a torch==X+cpu pin is installed as PyPI's torch==X, a CUDA 12 build that carries its "
                         "own CUDA runtime (environment.venv.gpu_torch: as_locked keeps the pin)"
                         + (f"; {env.venv.gpu_note}" if env.venv.gpu_note else ""))
        return lines
    if env.strategy in ("preinstalled", "apptainer", "pixi_pack"):
        known = ", ".join(env.provides) or "nothing declared"
        return [f"job environment: {env.strategy} ({env.python}); known to import: {known}"]
    return []


# --- what a workload needs ------------------------------------------------------------------

@dataclass(frozen=True)
class JobEnvironment:
    """One environment some workloads run in: the profile that defines it (requirements included),
    the packages they import, and the component folders (under defs/) that use it."""

    profile: ClusterProfile
    imports: tuple[str, ...]
    users: tuple[str, ...]


def _requirement_names(text: str) -> set[str]:
    names = set()
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)", line)
        if match and not line.startswith("-"):
            names.add(re.sub(r"[-_.]+", "_", match.group(1)).lower())
    return names


def check_job_python(profile: ClusterProfile, project_root: Path) -> None:
    """Refuse a plan whose job Python is not known to provide dagster_pipes (Python workloads need it).

    A venv provides it when its requirements name dagster-pipes (or dagster, which depends on it);
    any other strategy when `environment.provides` lists it. Raises ConfigError naming the fix.
    """
    env = profile.environment
    if env.python == "current" or profile.scheduler == "local":
        return
    if env.strategy == "venv":
        names = _requirement_names(_read(project_root / env.venv.requirements).decode(errors="replace"))
        if {"dagster_pipes", "dagster"} & names:
            return
        raise ConfigError(
            f"the job environment on {profile.name} is built from {env.venv.requirements}, which does not list dagster-pipes",
            fix=f"add a pinned dagster-pipes line to {env.venv.requirements} (the version in requirements.lock)",
            location=profile.location("environment", "venv", "requirements"),
        )
    if PIPES in env.provides:
        return
    raise ConfigError(
        f"the job's Python on {profile.name} ({env.strategy}, {env.python}) is not known to provide {PIPES}, "
        "which every Python workload reports through",
        fix="use environment.strategy: venv (built on the login node from workloads/requirements.txt), or check "
        f"`{env.python} -c 'import {PIPES}'` on the login node and then list it under environment.provides",
        location=profile.location("environment", "strategy"),
    )


# --- building and checking on the cluster -----------------------------------------------------

def _module_prelude() -> str:
    # Non-login shells (ssh commands, batch jobs) may lack the module function until profile.d runs.
    return "command -v module >/dev/null 2>&1 || source /etc/profile >/dev/null 2>&1 || true"


def _build_script(profile: ClusterProfile, target: str) -> str:
    venv = profile.environment.venv
    q = shlex.quote
    patterns = " ".join(q(m) for m in venv.modules)
    low, high = PYTHON_RANGE
    # Extra indexes (PyTorch's) are weighed with PyPI version by version, as scripts/bootstrap.sh does.
    indexes = "".join(f"--extra-index-url {q(url)} " for url in venv.extra_index_urls)
    indexes += "--index-strategy unsafe-best-match " if venv.extra_index_urls else ""
    return f"""{_module_prelude()}
set -eo pipefail
# No step may fail in silence: name the line that stopped the build.
trap 'echo "HPC-ENV: the build stopped at line $LINENO of its script (exit $?)" >&2' ERR
umask 022
target={q(target)}
mkdir -p "$(dirname "$target")"
exec 9>"$target.lock"
flock 9
# Another step may have built it while this one waited for the lock.
[ -f "$target/.hpc-ready" ] && exit 0
resolve() {{  # the newest module `module avail` lists whose name matches the glob $1
  local name
  module -t avail "${{1%%/*}}" 2>&1 | sed -e 's/([^)]*)//g' -e 's/[[:space:]]*$//' | grep -v ':$' |
    while IFS= read -r name; do if [[ $name == $1 ]]; then printf '%s\\n' "$name"; fi; done | sort -V | tail -n 1
}}
loaded=()
{"module purge >/dev/null 2>&1 || true" if profile.environment.module_purge else "# module_purge is off: the site's default modules stay (Leonardo's profile/base)."}
for pattern in {patterns}; do
  name=$pattern
  if [[ $pattern == *[*?[]* ]]; then name=$(resolve "$pattern"); fi
  if [ -z "$name" ]; then
    echo "HPC-ENV: no module matches $pattern; module avail ${{pattern%%/*}} lists: $(module -t avail "${{pattern%%/*}}" 2>&1 | grep -v ':$' | tr '\\n' ' ')" >&2
    exit 3
  fi
  module load "$name" >/dev/null 2>"$target.module-err" || {{ echo "HPC-ENV: module load $name failed: $(grep -v '^$' "$target.module-err" | head -n 3 | tr '\\n' ' ')" >&2; exit 3; }}
  loaded+=("$name")
done
rm -f "$target.module-err"
py=$(command -v {q(venv.python)}) || {{ echo "HPC-ENV: no {venv.python} on PATH after loading: ${{loaded[*]:-no modules}}" >&2; exit 4; }}
"$py" -c 'import sys; sys.exit(not {low} <= sys.version_info[:2] < {high})' || {{
  echo "HPC-ENV: $py is $("$py" -V 2>&1); the locked requirements need Python {low[0]}.{low[1]} to {high[0]}.{high[1] - 1}" >&2; exit 5; }}
rm -rf "$target"
"$py" -m venv "$target"
# Requirements arrive on stdin. A --find-links folder this login node lacks is skipped, as pip
# skips it (uv would stop): /opt/wheels of the test machine, say.
requirements=$(mktemp)
while IFS= read -r line || [ -n "$line" ]; do
  if [[ $line =~ ^[[:space:]]*(--find-links|-f)[[:space:]=]+(/[^[:space:]]*) ]] && [ ! -e "${{BASH_REMATCH[2]}}" ]; then
    echo "note: --find-links ${{BASH_REMATCH[2]}} is not on this login node; skipped" >&2
    continue
  fi
  printf '%s\n' "$line"
done > "$requirements"
# uv installs the locked requirements (from its cache next to the environments, hard-linked:
# a rebuild after a small change takes seconds); pip only fetches uv itself. The system trust
# store, as pip uses it: sites and proxies with their own CA work.
"$target/bin/python" -m pip install --quiet --disable-pip-version-check uv=={UV_VERSION}
UV_SYSTEM_CERTS=1 UV_CACHE_DIR="$(dirname "$target")/.uv-cache" "$target/bin/uv" pip install --quiet \
  --python "$target/bin/python" {indexes}-r "$requirements"
rm -f "$requirements"
{{
  echo "# Written when this environment was built on $(hostname) at $(date -u +%FT%TZ) with $("$py" -V 2>&1)."
  echo "# Jobs source it: the exact modules it was built with, then the venv."
  echo '{_module_prelude()}'
  for name in "${{loaded[@]}}"; do printf 'module load %q\\n' "$name"; done
  printf 'source %q\\n' "$target/bin/activate"
}} > "$target/{ACTIVATE}"
(source "$target/{ACTIVATE}" && python -c 'import {PIPES}') || {{ echo "HPC-ENV: the new environment cannot import {PIPES}" >&2; exit 6; }}
touch "$target/.hpc-ready"
"""


def _hpc_env_error(result) -> str:
    """The build's own one-line verdict; where a command stopped it, that command's last words too."""
    lines = result.stderr.splitlines()
    for index, line in enumerate(lines):
        if line.startswith("HPC-ENV: "):
            said = [x.strip() for x in lines[:index] if x.strip() and not x.startswith("note: ")][-6:]
            return "; ".join([*said, line.removeprefix("HPC-ENV: ")]) if "build stopped" in line else line.removeprefix("HPC-ENV: ")
    return result.stderr.strip()[-2000:] or f"exit code {result.exit_code}, no error output; {result.stdout.strip()[-500:]}"


def prepare(profile: ClusterProfile, project_root: Path, transport: Transport, base_dir: str,
            imports: Iterable[str] = (), log: Callable[[str], None] | None = None) -> None:
    """Make the job environment exist on the cluster and check that it imports `imports`.

    A venv is built once per content hash on the login node (minutes the first time, a second
    later); a preinstalled/apptainer Python is checked in place. Raises ConfigError naming the
    profile key or requirements file to change; ContactLost when the login node does not answer.
    """
    env = profile.environment
    imports = tuple(imports)
    if PIPES in imports:
        check_job_python(profile, project_root)
    rel = env_dir(profile, project_root)
    target = f"{base_dir}/{rel}" if rel else None
    q = shlex.quote
    if env.strategy == "venv":
        assert target is not None
        if transport.run(f"test -f {q(target)}/.hpc-ready && test -f {q(target)}/{ACTIVATE}", check=False).exit_code != 0:
            if log:
                log(f"building the job environment on {profile.name} from {env.venv.requirements} "
                    f"({target}); the first build takes minutes, later jobs reuse it")
            try:
                transport.run(_build_script(profile, target), stdin=venv_requirements(profile, project_root),
                              timeout=BUILD_TIMEOUT_S)
            except RemoteCommandError as exc:
                raise ConfigError(
                    f"building the job environment on {profile.name} failed: {_hpc_env_error(exc.result)}",
                    fix=f"check environment.venv (modules, python) of clusters/{profile.name}.yaml with `hpc doctor "
                    f"{profile.name}`, and the packages in {env.venv.requirements}",
                    location=profile.location("environment", "venv"),
                ) from None
    elif env.strategy == "pixi_pack":
        _unpack(profile, project_root, transport, target)
    if imports:  # a bash workload needs nothing from Python
        _verify_imports(profile, project_root, transport, base_dir, target, imports)


def _verify_imports(profile: ClusterProfile, project_root: Path, transport: Transport, base_dir: str,
                    target: str | None, imports: Iterable[str]) -> None:
    wanted = frozenset(i for i in imports if i)
    key = (transport.target, target or profile.name, wanted)
    with _VERIFIED_LOCK:
        if key in _VERIFIED:
            return
    probe = ("import importlib, sys\nmissing = []\nfor name in sys.argv[1:]:\n    try:\n        importlib.import_module(name)\n"
             "    except Exception as exc:\n        missing.append(f'{name} ({type(exc).__name__}: {exc})')\n"
             "print('; '.join(missing)); sys.exit(1 if missing else 0)")
    result = transport.run(login_command(profile, project_root, base_dir, ["-c", probe, *sorted(wanted)]), check=False, timeout=600)
    if result.exit_code != 0:
        missing = result.stdout.strip() or _hpc_env_error(result)
        where = profile.environment.venv.requirements if profile.environment.strategy == "venv" else "environment.provides"
        raise ConfigError(
            f"the job environment on {profile.name} cannot import what the workload needs: {missing}",
            fix=f"add the packages that provide them to {where}" if profile.environment.strategy == "venv"
            else f"install them into the job's Python ({profile.environment.strategy}) or switch to environment.strategy: venv",
            location=profile.location("environment"),
        )
    with _VERIFIED_LOCK:
        _VERIFIED.add(key)


def _unpack(profile: ClusterProfile, project_root: Path, transport: Transport, target: str | None) -> None:
    env = profile.environment
    assert env.pixi_pack is not None and target is not None
    archive = project_root / env.pixi_pack.archive
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    q = shlex.quote
    ready = f"test -f {q(target)}/.hpc-ready && test \"$(cat {q(target)}/.hpc-ready)\" = {digest}"
    if transport.run(ready, check=False).exit_code == 0:
        return
    transport.run(f"mkdir -p {q(target)}")
    transport.put(archive.read_bytes(), f"{target}/environment.tar", mode=0o600)
    transport.run(
        f"cd {q(target)} && echo '{digest}  environment.tar' | sha256sum -c --quiet && "
        f"pixi-unpack environment.tar && echo {digest} > .hpc-ready",
        timeout=BUILD_TIMEOUT_S,
    )


def login_command(profile: ClusterProfile, project_root: Path, base_dir: str, argv: list[str]) -> str:
    """A command line that runs `python argv...` on the login node inside the job's environment."""
    env = profile.environment
    runtime = activation(profile, project_root, base_dir)
    lines: list[str] = []
    if env.module_purge or env.modules or env.strategy == "venv":
        lines.append(_module_prelude())
    if env.module_purge:
        lines.append("module purge")
    lines += [f"module load {shell.check_module_name(m)}" for m in env.modules]
    lines += [*env.setup, *runtime.setup]
    python = runtime.python or env.python
    command = " ".join([*runtime.launch_prefix, shell.quote(python), *(shell.quote(a) for a in argv)])
    return "; ".join([*lines, command])
