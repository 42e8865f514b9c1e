"""Click-to-success time of a local no-op asset: SlurmAssetComponent against dagster's PythonScriptComponent.

    .venv/bin/python bench/local_step.py [--runs 5]

Both sides run as a user runs them: `dg launch --assets noop` with the default multiprocess executor,
each step in its own process, which loads the whole code location first. "ours" is this project as
shipped (every example asset, so its definitions load too) plus a no-op SlurmAssetComponent on the local
profile; "dagster" is a bare dg project with the same no-op as a `dagster.PythonScriptComponent`. The
workload is the same script on both sides (opens Dagster Pipes, reports one materialization). Runs are
interleaved; each side has its own Dagster instance. Prints medians (seconds) and ratios ours/dagster of:

- launch: wall time of the `dg launch` command (CLI start, definitions load, run);
- run: RUN_START to RUN_SUCCESS in the event log (what the UI shows as the run's duration);
- step: STEP_WORKER_STARTING to STEP_SUCCESS (step process start, definitions load, the step itself).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.conftest import copy_project  # noqa: E402

NOOP = textwrap.dedent("""\
    from dagster_pipes import open_dagster_pipes

    with open_dagster_pipes() as pipes:
        pipes.report_asset_materialization(metadata={"rows": 0})
    """)

INSTANCE = "telemetry:\n  enabled: false\n"


def dagster_project(base: Path) -> Path:
    """A bare dg project whose only asset is the no-op as dagster's own PythonScriptComponent."""
    project = base / "dagster-noop"
    (project / "noop_defs" / "noop").mkdir(parents=True)
    (project / "noop_defs" / "__init__.py").write_text("")
    (project / "pyproject.toml").write_text(textwrap.dedent("""\
        [project]
        name = "noop-baseline"
        version = "0"

        [tool.dg]
        directory_type = "project"

        [tool.dg.project]
        root_module = "noop_defs"
        defs_module = "noop_defs"
        code_location_target_module = "noop_definitions"
        """))
    (project / "noop_definitions.py").write_text(textwrap.dedent("""\
        from pathlib import Path

        import dagster as dg


        @dg.definitions
        def defs() -> dg.Definitions:
            return dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
        """))
    (project / "noop_defs" / "noop" / "noop.py").write_text(NOOP)
    (project / "noop_defs" / "noop" / "defs.yaml").write_text(textwrap.dedent("""\
        type: dagster.PythonScriptComponent
        attributes:
          execution: {path: noop.py}
          assets: [{key: noop}]
        """))
    return project


def our_project(base: Path) -> Path:
    """This project as shipped, plus the no-op as a SlurmAssetComponent on the local profile."""
    (base / "ours").mkdir()
    project = copy_project(base / "ours")
    (project / "workloads" / "noop.py").write_text(NOOP)
    (project / "defs" / "noop").mkdir()
    (project / "defs" / "noop" / "defs.yaml").write_text(textwrap.dedent("""\
        type: components.SlurmAssetComponent
        attributes:
          assets: [{key: noop}]
          script: noop.py
          cluster: local
        """))
    return project


def launch(project: Path) -> dict[str, float]:
    """One `dg launch --assets noop` in `project`; returns the three durations in seconds."""
    home = project / ".bench-dagster"
    home.mkdir(exist_ok=True)
    (home / "dagster.yaml").write_text(INSTANCE)
    env = {**os.environ, "DAGSTER_HOME": str(home), "PYTHONPATH": str(project),
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("HPC_CLUSTER", None)
    started = time.perf_counter()
    done = subprocess.run([str(Path(sys.executable).parent / "dg"), "launch", "--assets", "noop"],
                          cwd=project, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"dg launch failed in {project}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return {"launch": wall, **_event_durations(home)}


def _event_durations(home: Path) -> dict[str, float]:
    """Run and step durations of the newest run, from the instance's event log."""
    probe = textwrap.dedent(f"""\
        import json
        import dagster as dg
        from dagster._core.events import DagsterEventType as T
        with dg.DagsterInstance.from_config({str(home)!r}) as instance:
            run = instance.get_runs(limit=1)[0]
            stamps = {{}}
            for record in instance.all_logs(run.run_id):
                if record.dagster_event is not None:
                    stamps.setdefault(record.dagster_event.event_type, record.timestamp)
            print(json.dumps({{
                "run": stamps[T.RUN_SUCCESS] - stamps[T.RUN_START],
                "step": stamps[T.STEP_SUCCESS] - stamps[T.STEP_WORKER_STARTING],
            }}))
        """)
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="hpc-bench-local-"))
    try:
        projects = {"dagster": dagster_project(base), "ours": our_project(base)}
        for project in projects.values():  # warm-up: bytecode caches, instance creation
            launch(project)
        samples: dict[str, list[dict[str, float]]] = {name: [] for name in projects}
        for _ in range(args.runs):
            for name, project in projects.items():
                samples[name].append(launch(project))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(f"runs: {args.runs} per side, interleaved, after one warm-up each; medians in seconds")
    print(f"{'measure':<8} {'dagster':>8} {'ours':>8} {'ratio':>7}")
    for measure in ("launch", "run", "step"):
        base_s = statistics.median(s[measure] for s in samples["dagster"])
        ours_s = statistics.median(s[measure] for s in samples["ours"])
        print(f"{measure:<8} {base_s:8.2f} {ours_s:8.2f} {ours_s / base_s:6.2f}x")


if __name__ == "__main__":
    main()
