from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent

# Site variables that would change rendered scripts; tests set what they need explicitly.
_SITE_ENV = ("HPC_CLUSTER", "HPC_FORCE_CLUSTER", "HPC_USER", "HPC_ACCOUNT", "VSC5_ACCOUNT", "LEONARDO_ACCOUNT", "MUSICA_ACCOUNT", "HPC_DOCKER_ACCOUNT")


@pytest.fixture(autouse=True)
def _clean_site_env(monkeypatch):
    for name in _SITE_ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def clusters_dir() -> Path:
    return ROOT / "clusters"


def copy_project(dest: Path) -> Path:
    """A throw-away copy of the project (defs, clusters, workloads) to break on purpose."""
    for name in ("pyproject.toml", "definitions.py", "branches.yaml"):
        shutil.copy2(ROOT / name, dest / name)
    for name in ("defs", "clusters", "workloads", ".dagster"):
        shutil.copytree(ROOT / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
    # The copy imports its own defs/ but the installed `components` package.
    (dest / "components").symlink_to(ROOT / "components", target_is_directory=True)
    return dest


@pytest.fixture
def project(tmp_path) -> Path:
    return copy_project(tmp_path)


def run_dg(project: Path, *args: str, timeout: int = 180, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {
        **os.environ,
        "PYTHONPATH": str(project),
        "DAGSTER_HOME": str(project / ".dagster"),
        "VIRTUAL_ENV": str(VENV_BIN.parent),
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "NO_COLOR": "1",
        **(env or {}),
    }
    return subprocess.run(
        [str(VENV_BIN / "dg"), *args],
        cwd=project,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def forget_defs() -> None:
    """Drop any cached import of another project's defs package."""
    for name in [m for m in sys.modules if m == "defs" or m.startswith("defs.")]:
        del sys.modules[name]


def use_project(project: Path, monkeypatch) -> None:
    """Work in `project` as if it were the current project: its cwd, its defs package."""
    monkeypatch.chdir(project)
    monkeypatch.syspath_prepend(str(project))
    forget_defs()


def materialize(project: Path, keys: list[str], monkeypatch, tags: dict | None = None):
    """Build the copy's definitions in this process and materialize `keys` on an ephemeral instance."""
    import dagster as dg

    use_project(project, monkeypatch)
    defs = dg.ComponentTree.for_project(project).build_defs()
    instance = dg.DagsterInstance.ephemeral()
    job = defs.resolve_implicit_global_asset_job_def()
    result = job.execute_in_process(
        instance=instance,
        asset_selection=[dg.AssetKey.from_user_string(k) for k in keys],
        raise_on_error=False,
        tags=tags or {},
    )
    return result, instance


def materialized(result, key: str) -> dict:
    """The metadata of the one materialization of `key` in a run, as plain values."""
    import dagster as dg

    events = [e for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey.from_user_string(key)]
    assert len(events) == 1, f"{key}: {len(events)} materializations"
    return {name: value.value for name, value in events[0].materialization.metadata.items()}


def pick(metadata: dict, *names: str) -> tuple:
    """Selected metadata values, in order (None where absent)."""
    return tuple(metadata.get(n) for n in names)


def step_failures(result) -> str:
    return "\n".join(e.event_specific_data.error.message for e in result.all_events if e.is_step_failure)


def materialize_ok(project: Path, keys: list[str], monkeypatch) -> dict[str, dict]:
    """Materialize `keys`, expect success, and return each key's metadata."""
    result, _ = materialize(project, keys, monkeypatch)
    assert result.success, step_failures(result)
    return {key: materialized(result, key) for key in keys}


def materialize_failing(project: Path, keys: list[str], monkeypatch) -> str:
    """Materialize `keys`, expect a failed step, and return the failure messages."""
    result, _ = materialize(project, keys, monkeypatch)
    assert not result.success
    return step_failures(result)


def edit(project, rel, old, new):
    path = project / rel
    text = path.read_text()
    assert old in text, f"{old!r} not in {rel}"
    path.write_text(text.replace(old, new, 1))
    return text.replace(old, new, 1).splitlines()


def line_of(lines, needle):
    return next(i for i, line in enumerate(lines, 1) if needle in line)


def build(project):
    import sys

    import dagster as dg

    sys.path.insert(0, str(project))
    try:
        forget_defs()
        return dg.ComponentTree.for_project(project).build_defs()
    finally:
        sys.path.remove(str(project))


def root_cause(exc: BaseException) -> BaseException:
    while True:
        if exc.__cause__ is not None:
            exc = exc.__cause__
        elif exc.__context__ is not None and not exc.__suppress_context__:
            exc = exc.__context__
        else:
            return exc
