"""Where the job's Python comes from, per profile: preinstalled, venv, pixi-pack or apptainer.

`activation()` is pure (previews show the exact lines); `prepare()` makes the environment exist on
the cluster, cached by the hash of what defines it and verified before use.
"""

from __future__ import annotations

import hashlib
import shlex
from pathlib import Path

from components.core import shell
from components.core.errors import ConfigError
from components.core.profiles import ClusterProfile
from components.core.render import Runtime
from components.core.ssh import RemoteCommandError, Transport

ENVS_DIR = "envs"


def _hash_file(path: Path) -> str:
    if not path.is_file():
        raise ConfigError(
            f"{path} does not exist",
            fix="create it (for venv: the locked requirements of your workloads, at least dagster-pipes)",
        )
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def env_dir(profile: ClusterProfile, project_root: Path) -> str | None:
    """Remote directory of the environment, relative to paths.base_dir; None when nothing is built."""
    env = profile.environment
    if env.strategy == "venv":
        return f"{ENVS_DIR}/venv-{_hash_file(project_root / env.venv.requirements)}"
    if env.strategy == "pixi_pack":
        assert env.pixi_pack is not None
        return f"{ENVS_DIR}/pixi-{_hash_file(project_root / env.pixi_pack.archive)}"
    return None


def activation(profile: ClusterProfile, project_root: Path, base_dir: str | None = None) -> Runtime:
    """The Runtime lines for this profile's strategy; base_dir is the resolved remote path when known."""
    env = profile.environment
    base = shell.quote(base_dir) if base_dir else shell.quote_path(profile.paths.base_dir)
    rel = env_dir(profile, project_root)
    if env.strategy == "venv":
        # After activation `python3` is the venv's own interpreter.
        return Runtime(setup=(shell.ShellSafe(f"source {base}/{shell.quote(rel + '/bin/activate')}"),))
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


def prepare(profile: ClusterProfile, project_root: Path, transport: Transport, base_dir: str) -> None:
    """Build or upload the environment once per content hash; verify it before every use."""
    env = profile.environment
    rel = env_dir(profile, project_root)
    if rel is None:
        return
    target = f"{base_dir}/{rel}"
    q = shlex.quote
    if env.strategy == "venv":
        requirements = (project_root / env.venv.requirements).read_bytes()
        check = f"{q(target)}/bin/python -c 'import dagster_pipes' 2>/dev/null && test -f {q(target)}/.hpc-ready"
        if transport.run(check, check=False).exit_code == 0:
            return
        # flock: concurrent steps wanting the same venv build it once.
        build = (
            f"set -e; umask 022; mkdir -p {q(base_dir + '/' + ENVS_DIR)}; exec 9>{q(target)}.lock; flock 9; "
            f"if ! ({check}); then rm -rf {q(target)}; {q(env.venv.python)} -m venv {q(target)}; "
            f"{q(target)}/bin/python -m pip install --quiet --disable-pip-version-check -r /dev/stdin; "
            f"{q(target)}/bin/python -c 'import dagster_pipes'; touch {q(target)}/.hpc-ready; fi"
        )
        try:
            transport.run(build, stdin=requirements, timeout=1800)
        except RemoteCommandError as exc:
            raise ConfigError(
                f"building the job environment on {profile.name} failed:\n{exc.result.stderr.strip()[-2000:]}",
                fix=f"check {env.venv.requirements} and that {env.venv.python} exists on the login node",
            ) from None
    elif env.strategy == "pixi_pack":
        assert env.pixi_pack is not None
        archive = project_root / env.pixi_pack.archive
        digest = hashlib.sha256(archive.read_bytes()).hexdigest()
        ready = f"test -f {q(target)}/.hpc-ready && test \"$(cat {q(target)}/.hpc-ready)\" = {digest}"
        if transport.run(ready, check=False).exit_code == 0:
            return
        transport.run(f"mkdir -p {q(target)}")
        transport.put(archive.read_bytes(), f"{target}/environment.tar", mode=0o600)
        transport.run(
            f"cd {q(target)} && echo '{digest}  environment.tar' | sha256sum -c --quiet && "
            f"pixi-unpack environment.tar && echo {digest} > .hpc-ready",
            timeout=1800,
        )


def login_command(profile: ClusterProfile, project_root: Path, base_dir: str, argv: list[str]) -> str:
    """A command line that runs `python argv...` on the login node inside the job's environment."""
    env = profile.environment
    runtime = activation(profile, project_root, base_dir)
    lines: list[str] = []
    if env.module_purge or env.modules:
        lines.append("command -v module >/dev/null 2>&1 || source /etc/profile")
    if env.module_purge:
        lines.append("module purge")
    lines += [f"module load {shell.check_module_name(m)}" for m in env.modules]
    lines += [*env.setup, *runtime.setup]
    python = runtime.python or env.python
    command = " ".join([*runtime.launch_prefix, shell.quote(python), *(shell.quote(a) for a in argv)])
    return "; ".join([*lines, command])
