"""Job per asset against one run-scoped allocation, on a busy test cluster: Slurm jobs, queue wait, core-seconds, wall.

    bash scripts/test-cluster.sh up        # once; the bench reads /tmp/hpc-test-cluster/env.sh itself
    .venv/bin/python bench/allocations.py [--repeats 3] [--wait-s 20] [--assets 10] [--sleep-s 2]
    .venv/bin/python bench/allocations.py --wait-s 0 20    # a quiet cluster as well

The workload is what a user launches: N independent assets (default 10; each a SlurmAssetComponent whose
script opens Dagster Pipes, sleeps --sleep-s and reports one materialization; resources: 1 core, time
00:02:00), materialized by ONE `dg launch --assets a,b,...` through the default multiprocess executor
(max_concurrent --max-concurrent, default N: every step at once, as on an orchestrator with N or more cores;
this favours job-per-asset, whose queue waits then overlap). Two modes, alternating in each repetition
(job, run, then run, job, ...), each in its own project copy with its own DAGSTER_HOME:

- job: `submission: {allocation: job}`, one sbatch per asset (the behaviour before allocations);
- run: `submission: {allocation: run}`, one sbatch for the run (job name alloc-<run id>), each asset an
  srun job step inside it. Sized from the steps' resources, it is one node of the cpu partition (2 cores
  on the test cluster), so at most 2 steps run at once; job-per-asset spreads over both nodes (4 cores).

A busy cluster, deterministically: every sbatch waits W seconds (--wait-s, default 20) before Slurm may
start it. The bench writes a copy of clusters/docker.yaml into each project copy as clusters/docker-wait<W>.yaml
with `slurm.extra_directives: ["--begin=now+W"]`, and the assets run on that profile. Why this and not a
blocker job (a job that fills the 2 nodes for a while): a blocker makes only the submissions that arrive
while it runs wait, and by how long depends on when they arrive, on how long the run's own jobs hold the
cores and on whoever else uses the shared test cluster; --begin gives each submission its own wait of W.
Why the profile and not the asset's `resources.extra_directives`: an asset's extra directives make it
unfit for a shared allocation (they apply to a job, not a job step: components.core.allocation.need_of),
so it would silently get a job of its own; profile-level directives go on every sbatch the profile
renders, the allocation's included (components.core.allocation.allocation_plan). Slurm starts a job
whose begin time has passed on its next scheduling pass (sched/backfill, ~30 s apart here), so a
submission waits W plus up to that pass interval; the figures below are Slurm's, not W.

Per launch, from Slurm's accounting (`sacct -a`, read on the test cluster's host, as `bench/ssh_sessions.py`
reads sdiag) of the jobs whose working directory is one of the run's job directories
(<base_dir>/jobs/<run id>/...):

- sbatch jobs: how many jobs the run submitted (alloc jobs: named alloc-*; asset jobs: the others);
- srun steps: job steps started with srun (the assets' steps inside an allocation; .batch/.extern not counted);
- queue wait s: sum over the jobs of Start - Submit;
- core s: sum over the jobs of ElapsedRaw x NCPUS (what the cluster booked, the allocation's idle time included);
- wall s: seconds of the `dg launch` command.

After each launch the bench waits up to --grace-s for the run's jobs to leave squeue; a job still there
(an allocation left running) stops the bench with squeue's line and the scancel command, and is left in
place for inspection. Prints a markdown table of medians per W with the ratio run / job.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from datetime import datetime
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.ssh_sessions import INSTANCE, cluster_env, launch_env, newest_run  # noqa: E402
from components.core.session import close_all  # noqa: E402
from tests.conftest import copy_project  # noqa: E402

MODES = ("job", "run")  # submission.allocation
MEASURES = ("sbatch_jobs", "alloc_jobs", "asset_jobs", "srun_steps", "queue_wait_s", "core_s", "wall_s")
SACCT_FORMAT = ("JobID", "JobName", "WorkDir", "Submit", "Start", "End", "ElapsedRaw", "NCPUS", "State")
SLEEPER = textwrap.dedent("""\
    import sys
    import time

    from dagster_pipes import open_dagster_pipes

    with open_dagster_pipes() as pipes:
        time.sleep(float(sys.argv[1]))
        pipes.report_asset_materialization(metadata={"slept_s": float(sys.argv[1])})
    """)


# -- pure parts (unit-tested in tests/test_bench_allocations.py) -----------------------------------
def waiting_profile(docker_yaml: str, wait_s: int) -> str:
    """clusters/docker.yaml's text -> the text of a copy whose every sbatch waits `wait_s` seconds
    (`--begin=now+W` appended to slurm.extra_directives; none added for W=0). Comments are not kept.

    Raises ValueError for a negative wait or a profile without a slurm section.
    """
    if wait_s < 0:
        raise ValueError(f"wait_s must be >= 0 seconds, got {wait_s}")
    data = yaml.safe_load(docker_yaml)
    if not isinstance(data, dict) or not isinstance(data.get("slurm"), dict):
        raise ValueError("the profile has no slurm section to add --begin to")
    if wait_s:
        data["slurm"]["extra_directives"] = [*data["slurm"].get("extra_directives", []), f"--begin=now+{wait_s}"]
    data["description"] = f"{data.get('description', 'docker')}; bench copy: every sbatch waits {wait_s} s (--begin)"
    return (f"# Written by bench/allocations.py: clusters/docker.yaml with every submission held {wait_s} s.\n"
            + yaml.safe_dump(data, sort_keys=False))


def asset_yaml(name: str, cluster: str, mode: str, sleep_s: float) -> str:
    """defs.yaml of one sleeper asset on `cluster` with submission.allocation `mode` (job | run)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    return ("type: components.SlurmAssetComponent\n"
            "attributes:\n"
            f"  assets:\n    - key: {name}\n"
            "  script: sleeper.py\n"
            f"  args: [\"{sleep_s:g}\"]\n"
            f"  cluster: {cluster}\n"
            '  resources: {time: "00:02:00"}\n'
            f"  submission: {{allocation: {mode}}}\n")


def parse_sacct(text: str) -> list[dict[str, str]]:
    """`sacct -n -P --format=<SACCT_FORMAT>` output -> one dict per line (jobs and their steps)."""
    rows = []
    for line in text.splitlines():
        fields = line.split("|")
        if len(fields) == len(SACCT_FORMAT):
            rows.append(dict(zip(SACCT_FORMAT, fields)))
    return rows


def run_jobs(rows: list[dict[str, str]], run_id: str) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """(jobs, srun steps) of the Dagster run `run_id`: jobs submitted from a directory under
    .../jobs/<run_id>/ (every step's job dir and the allocation's dir live there), and the numbered
    steps of those jobs (<job>.<n>; .batch and .extern are Slurm's own)."""
    marker = f"/jobs/{run_id}/"
    jobs = [r for r in rows if "." not in r["JobID"] and marker in r["WorkDir"] + "/"]
    ids = {r["JobID"] for r in jobs}
    steps = [r for r in rows if r["JobID"].partition(".")[0] in ids and r["JobID"].partition(".")[2].isdigit()]
    return jobs, steps


def figures(jobs: list[dict[str, str]], steps: list[dict[str, str]]) -> dict[str, float]:
    """The Slurm measures of one launch (MEASURES less wall_s) from its jobs and steps (run_jobs).

    Raises ValueError naming the job when one never started or has not ended (no Start/End time),
    since its wait and its cost would be unknown.
    """
    wait, core_s = 0.0, 0
    for job in jobs:
        if not _time(job["Start"]) or not _time(job["End"]):
            raise ValueError(f"job {job['JobID']} ({job['JobName']}) has Start {job['Start']}, End {job['End']}, "
                             f"State {job['State']}: not a finished job")
        wait += (_time(job["Start"]) - _time(job["Submit"])).total_seconds()
        core_s += int(job["ElapsedRaw"]) * int(job["NCPUS"])
    allocs = sum(job["JobName"].startswith("alloc-") for job in jobs)
    return {"sbatch_jobs": len(jobs), "alloc_jobs": allocs, "asset_jobs": len(jobs) - allocs,
            "srun_steps": len(steps), "queue_wait_s": wait, "core_s": core_s}


def _time(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text)
    except ValueError:  # "Unknown", "None"
        return None


def medians(samples: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(s[key] for s in samples) for key in MEASURES}


def table(by_wait: dict[int, dict[str, dict[str, float]]], repeats: int) -> str:
    """Markdown table: per wait W and measure, the medians of job and run and the ratio run / job."""
    rows = [f"| W (s) | measure (median of {repeats}) | job per asset | run allocation | run / job |",
            "|---:|---|---:|---:|---:|"]
    for wait, by_mode in by_wait.items():
        for key in MEASURES:
            a, b = by_mode["job"][key], by_mode["run"][key]
            ratio = f"{b / a:.2f}x" if a else "n/a"
            rows.append(f"| {wait} | {key} | {a:.1f} | {b:.1f} | {ratio} |")
    return "\n".join(rows)


# -- the cluster -----------------------------------------------------------------------------------
def make_project(base: Path, wait_s: int, mode: str, names: list[str], sleep_s: float) -> Path:
    """A project copy whose assets `names` run on the bench profile docker-wait<W> with allocation `mode`."""
    root = base / f"w{wait_s}-{mode}"
    root.mkdir()
    project = copy_project(root)
    cluster = f"docker-wait{wait_s}"
    (project / "clusters" / f"{cluster}.yaml").write_text(waiting_profile((ROOT / "clusters" / "docker.yaml").read_text(), wait_s))
    (project / "workloads" / "sleeper.py").write_text(SLEEPER)
    for name in names:
        (project / "defs" / name).mkdir()
        (project / "defs" / name / "defs.yaml").write_text(asset_yaml(name, cluster, mode, sleep_s))
    (root / "home").mkdir()
    (root / "home" / "dagster.yaml").write_text(INSTANCE)
    return project


def _sacct(run_id: str, since: str) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    done = subprocess.run(["sacct", "-a", "-n", "-P", "-S", since, f"--format={','.join(SACCT_FORMAT)}"],
                          capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise SystemExit(f"sacct failed (exit {done.returncode}): {done.stderr.strip()}; is slurmdbd up? "
                         "`bash scripts/test-cluster.sh up` starts it")
    return run_jobs(parse_sacct(done.stdout), run_id)


def _queued(run_id: str) -> list[str]:
    """squeue lines (id|name|state|time|workdir) of the run's jobs still known to the controller."""
    done = subprocess.run(["squeue", "-a", "-h", "-o", "%i|%j|%T|%M|%Z"], capture_output=True, text=True, timeout=60)
    return [line for line in done.stdout.splitlines() if f"/jobs/{run_id}/" in line + "/"]


def launch(project: Path, names: list[str], env: dict[str, str], max_concurrent: int, grace_s: float,
           timeout_s: float) -> dict[str, float]:
    """One `dg launch` of all `names` in `project`; its measures (MEASURES).

    Raises SystemExit with dg's output when the launch fails or not every asset materialized, and with
    squeue's lines when a job of the run is still queued or running `grace_s` after dg launch returned.
    """
    home = project.parent / "home"
    config = {"execution": {"config": {"multiprocess": {"max_concurrent": max_concurrent}}}}
    since = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(time.time() - 60))
    started = time.perf_counter()
    done = subprocess.run([str(Path(sys.executable).parent / "dg"), "launch", "--assets", ",".join(names),
                           "--config-json", json.dumps(config)],
                          cwd=project, env={**env, "DAGSTER_HOME": str(home), "PYTHONPATH": str(project)},
                          capture_output=True, text=True, timeout=timeout_s)
    wall = time.perf_counter() - started
    run_id, status, materialized = newest_run(home)
    if done.returncode != 0 or status != "SUCCESS" or materialized != len(names):
        raise SystemExit(f"dg launch in {project} failed (exit {done.returncode}, run {run_id or '?'} {status}, "
                         f"{materialized}/{len(names)} materialized):\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}")
    deadline = time.monotonic() + grace_s
    while (queued := _queued(run_id)) and time.monotonic() < deadline:
        time.sleep(1)
    if queued:
        ids = " ".join(line.split("|")[0] for line in queued)
        raise SystemExit(f"run {run_id} ended {grace_s:.0f} s ago but Slurm still holds its job(s) (id|name|state|time|dir):\n"
                         + "\n".join(queued) + f"\nLeft in place for inspection; end them with `scancel {ids}`.")
    # Records reach sacct a second or two after a job leaves squeue.
    for attempt in range(20):
        jobs, steps = _sacct(run_id, since)
        try:
            if jobs:
                return {**figures(jobs, steps), "wall_s": wall}
        except ValueError:
            if attempt == 19:
                raise
        time.sleep(1)
    raise SystemExit(f"sacct has no job of run {run_id} (working directory under .../jobs/{run_id}/) 20 s after it ended")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="launches per mode and wait (default 3)")
    parser.add_argument("--wait-s", type=int, nargs="+", default=[20],
                        help="seconds every sbatch is held (--begin=now+W); several values: one table block each (default 20)")
    parser.add_argument("--assets", type=int, default=10, help="independent assets in the one launch (default 10)")
    parser.add_argument("--sleep-s", type=float, default=2.0, help="seconds each asset's workload sleeps (default 2)")
    parser.add_argument("--max-concurrent", type=int, default=None,
                        help="step processes of the multiprocess executor at once (default: --assets)")
    parser.add_argument("--grace-s", type=float, default=30.0,
                        help="seconds the run's jobs may stay in squeue after dg launch returns (default 30)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds one dg launch may take (default 900)")
    args = parser.parse_args()
    if args.repeats < 1 or args.assets < 1 or any(w < 0 for w in args.wait_s):
        parser.error("--repeats and --assets must be >= 1, --wait-s >= 0")
    max_concurrent = args.max_concurrent or args.assets
    names = [f"sleeper_{i:02d}" for i in range(args.assets)]
    base = Path(tempfile.mkdtemp(prefix="hpc-bench-alloc-"))
    sessions = Path(tempfile.mkdtemp(prefix="hpc-ba-"))  # short: control socket paths are limited to ~100 bytes
    env = launch_env(cluster_env(), sessions)
    samples: dict[int, dict[str, list[dict]]] = {w: {m: [] for m in MODES} for w in args.wait_s}
    started = time.perf_counter()
    try:
        projects = {(w, m): make_project(base, w, m, names, args.sleep_s) for w in args.wait_s for m in MODES}
        for repeat in range(args.repeats):
            for wait in args.wait_s:
                for mode in MODES if repeat % 2 == 0 else reversed(MODES):
                    sample = launch(projects[wait, mode], names, env, max_concurrent, args.grace_s, args.timeout)
                    samples[wait][mode].append(sample)
                    print(f"repeat {repeat + 1} W={wait} {mode}: "
                          + ", ".join(f"{k} {round(v, 1)}" for k, v in sample.items()), flush=True)
    finally:
        close_all(sessions)
        shutil.rmtree(sessions, ignore_errors=True)
        shutil.rmtree(base, ignore_errors=True)
    print(f"\n{args.assets} assets (1 core, sleep {args.sleep_s:g} s each) on the test cluster (2 nodes x 2 cores), "
          f"one dg launch, max_concurrent {max_concurrent}; every sbatch held W s (--begin=now+W); "
          f"{args.repeats} launch(es) per mode and W, interleaved; bench {time.perf_counter() - started:.0f} s")
    print(table({w: {m: medians(samples[w][m]) for m in MODES} for w in args.wait_s}, args.repeats))


if __name__ == "__main__":
    main()
