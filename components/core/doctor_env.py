"""`hpc doctor`'s job environment check: every environment the project's workloads run in builds
on the login node (or is cached) and imports what they need.

The project's workloads are found by the caller (components/inventory.py loads them from defs/);
this module only runs `environments.prepare` for each and reports one line per environment.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from components.core import environments
from components.core.doctor_report import CheckResult, failed, passed
from components.core.environments import JobEnvironment
from components.core.errors import ConfigError

if TYPE_CHECKING:
    from components.core.doctor import Check, Context

CHECK = "job environment"
Provider = Callable[[Path, str], list[JobEnvironment]]


def job_environment_check(provider: Provider) -> Check:
    """The check, given `provider(project_root, cluster)` -> the environments the workloads need there."""
    from components.core.doctor import Check

    def run(ctx: Context) -> list[CheckResult]:
        return check_job_environments(ctx, provider(ctx.project_root, ctx.cluster))

    return Check(CHECK, run, needs=("authentication", "base dir"))


def check_job_environments(ctx: Context, needed: list[JobEnvironment]) -> list[CheckResult]:
    """One line per environment: built or cached, the modules it loads, and the imports verified."""
    assert ctx.transport is not None
    base = ctx.facts["base_dir"]
    results = []
    for env in needed:
        users = ", ".join(f"defs/{u}" for u in env.users)
        strategy = env.profile.environment.strategy
        try:
            environments.prepare(env.profile, ctx.project_root, ctx.transport, base, env.imports)
        except ConfigError as exc:
            results.append(failed(CHECK, f"{users}: {exc.problem}", exc.fix))
            continue
        rel = environments.env_dir(env.profile, ctx.project_root)
        where = f"{strategy} {rel}" if rel else strategy
        loads = ""
        if strategy == "venv":
            found = ctx.run(f"grep '^module load' {shlex.quote(f'{base}/{rel}/{environments.ACTIVATE}')}").stdout.split("\n")
            modules = [line.removeprefix("module load ").strip() for line in found if line.strip()]
            loads = f", loads {' '.join(modules)}" if modules else ", loads no module"
        results.append(passed(CHECK, f"{where} for {users}{loads}; imports {', '.join(env.imports) or 'nothing needed'}"))
    return results or [passed(CHECK, "no workload of this project runs on this cluster")]
