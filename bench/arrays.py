"""50 partitions as 50 Slurm jobs against ONE job array, on the test cluster: sbatch calls, queue wait, wall.

    bash scripts/test-cluster.sh up        # once; the bench reads /tmp/hpc-test-cluster/env.sh itself
    .venv/bin/python bench/arrays.py [--partitions 50] [--max-concurrent 8] [--sleep-s 1] [--wait-s 0] [--skip-dagster]

Two measurements:

1. Slurm over SSH (the project's transport and SlurmClient, as a step uses them): the same per-partition
   script submitted as N jobs (one `sbatch` each, what a backfill without arrays does: one run and one
   job per partition) against one `sbatch --array=0-(N-1)%K`. Each is followed with one `squeue` per
   0.5 s until no task is left; then sacct gives the queue wait (sum of Start - Submit over jobs/tasks).
   --wait-s W adds `--begin=now+W` to every submission (a busy cluster: each submission waits W plus
   Slurm's next scheduling pass).
2. Dagster (skip with --skip-dagster): one `dg launch --partition-range` of N partitions of a
   SlurmAssetComponent on the docker profile: one run, one array, N materializations; its wall.

Job-per-partition through Dagster (N runs, one `dg launch` or run worker each) is not launched here: on
this 2-core machine each run costs ~8-10 s of Dagster start-up alone, before its job is submitted.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TASK = """#!/bin/bash
#SBATCH --partition=cpu
#SBATCH --qos=normal
#SBATCH --account=hpc-test
#SBATCH --cpus-per-task=1
#SBATCH --mem=100M
#SBATCH --time=00:05:00
{extra}
sleep {sleep}
echo "partition ${{SLURM_ARRAY_TASK_ID:-$1}} done"
"""


def _env() -> None:
    env_file = Path(os.environ.get("HPC_TEST_CLUSTER_DIR", "/tmp/hpc-test-cluster")) / "env.sh"
    out = subprocess.run(["bash", "-c", f"source {shlex.quote(str(env_file))} && env"], capture_output=True, text=True, check=True)
    for line in out.stdout.splitlines():
        key, _, value = line.partition("=")
        if key.startswith("HPC_TEST"):
            os.environ[key] = value


def _transport():
    from components.core.profiles import load_profile
    from components.core.ssh_target import target_for
    from components.core.transports import transport_for

    return transport_for(target_for(load_profile("docker", ROOT / "clusters")))


def _queue_wait(transport, job_ids: list[str]) -> float:
    """Sum of Start - Submit over the jobs (array tasks each), from sacct (retried until all are final)."""
    ids = ",".join(sorted({j.split("_")[0] for j in job_ids}))
    for _ in range(20):
        out = transport.run(f"sacct -X -n -P -j {ids} -o JobID,State,Submit,Start", check=False).stdout
        rows = [line.split("|") for line in out.splitlines() if line.count("|") == 3]
        if rows and all(r[1] in ("COMPLETED", "FAILED", "CANCELLED") for r in rows) and not any("[" in r[0] for r in rows):
            total = 0.0
            for _, _, submit, start in rows:
                total += time.mktime(time.strptime(start, "%Y-%m-%dT%H:%M:%S")) - time.mktime(time.strptime(submit, "%Y-%m-%dT%H:%M:%S"))
            return total
        time.sleep(0.5)
    return float("nan")


def _follow(transport, job_ids: list[str]) -> int:
    """squeue calls until none of the jobs is pending or running."""
    ids = ",".join(sorted({j.split("_")[0] for j in job_ids}))
    calls = 0
    while True:
        calls += 1
        out = transport.run(f"squeue --me -h -t PENDING,RUNNING,COMPLETING -j {ids} -o %i", check=False).stdout
        if not out.strip():
            return calls
        time.sleep(0.5)


def slurm_level(n: int, k: int, sleep_s: float, wait_s: int) -> dict[str, dict]:
    transport = _transport()
    extra = f"#SBATCH --begin=now+{wait_s}" if wait_s else ""
    base = transport.run("mktemp -d /tmp/bench-arrays-XXXX").stdout.strip()
    transport.put(TASK.format(extra=extra, sleep=sleep_s).encode(), f"{base}/task.sh", 0o700)
    results = {}
    # N jobs
    started = time.monotonic()
    ids = []
    for i in range(n):
        out = transport.run(f"cd {base} && sbatch --parsable -J bench-jobs -o /dev/null task.sh {i}").stdout.strip()
        ids.append(out.split(";")[0])
    submitted = time.monotonic() - started
    polls = _follow(transport, ids)
    results["jobs"] = {"sbatch": n, "submit_s": submitted, "wall_s": time.monotonic() - started, "squeue": polls,
                       "queue_wait_s": _queue_wait(transport, ids)}
    # one array
    started = time.monotonic()
    out = transport.run(f"cd {base} && sbatch --parsable -J bench-array -o /dev/null --array=0-{n - 1}%{min(n, k)} task.sh").stdout.strip()
    array = out.split(";")[0]
    submitted = time.monotonic() - started
    polls = _follow(transport, [array])
    results["array"] = {"sbatch": 1, "submit_s": submitted, "wall_s": time.monotonic() - started, "squeue": polls,
                        "queue_wait_s": _queue_wait(transport, [array])}
    transport.run(f"rm -rf {shlex.quote(base)}", check=False)
    return results


def dagster_level(n: int, k: int, sleep_s: float) -> dict:
    from tests.conftest import copy_project

    project = copy_project(Path(tempfile.mkdtemp(prefix="bench-arrays-")))
    keys = [f"p{i:02d}" for i in range(n)]
    (project / "workloads" / "bench_partition.py").write_text(textwrap.dedent(f"""\
        import time
        from dagster_pipes import open_dagster_pipes
        with open_dagster_pipes() as pipes:
            time.sleep({sleep_s})
            pipes.report_asset_materialization(metadata={{"key": pipes.partition_key}})
        """))
    folder = project / "defs" / "bench_partitions"
    folder.mkdir()
    (folder / "defs.yaml").write_text(textwrap.dedent(f"""\
        type: components.SlurmAssetComponent
        attributes:
          assets: [{{key: bench/partitions}}]
          script: bench_partition.py
          cluster: docker
          partitions: {{static: {keys}}}
          submission: {{max_concurrent: {k}}}
          resources: {{time: "00:05:00", mem: 100M}}
        """))
    env = {**os.environ, "PYTHONPATH": str(project), "DAGSTER_HOME": str(project / ".dagster")}
    started = time.monotonic()
    out = subprocess.run([str(ROOT / ".venv/bin/dg"), "launch", "--assets", "bench/partitions", "--partition-range",
                          f"{keys[0]}...{keys[-1]}"], cwd=project, env=env, capture_output=True, text=True, timeout=900)
    wall = time.monotonic() - started
    text = out.stdout + out.stderr
    return {"ok": out.returncode == 0, "wall_s": wall, "sbatch": len(re.findall(r"submitted Slurm job array", text)),
            "materializations": len(re.findall(r"ASSET_MATERIALIZATION", text)),
            "ended": (re.findall(r"job array \d+ ended: ([^\n]+)", text) or ["?"])[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--partitions", type=int, default=50)
    parser.add_argument("--max-concurrent", type=int, default=8)
    parser.add_argument("--sleep-s", type=float, default=1.0)
    parser.add_argument("--wait-s", type=int, default=0)
    parser.add_argument("--skip-dagster", action="store_true")
    args = parser.parse_args()
    _env()
    print(f"{args.partitions} partitions, K={args.max_concurrent}, {args.sleep_s}s each, --begin=now+{args.wait_s}")
    slurm = slurm_level(args.partitions, args.max_concurrent, args.sleep_s, args.wait_s)
    print("| over SSH | sbatch calls | submit s | squeue polls | total queue wait s | wall s |")
    print("|---|---:|---:|---:|---:|---:|")
    for mode in ("jobs", "array"):
        r = slurm[mode]
        print(f"| {mode} | {r['sbatch']} | {r['submit_s']:.1f} | {r['squeue']} | {r['queue_wait_s']:.0f} | {r['wall_s']:.1f} |")
    if not args.skip_dagster:
        d = dagster_level(args.partitions, args.max_concurrent, args.sleep_s)
        print(f"dg launch --partition-range, {args.partitions} partitions: ok={d['ok']} sbatch={d['sbatch']} "
              f"materializations={d['materializations']} tasks: {d['ended']} wall={d['wall_s']:.1f}s")


if __name__ == "__main__":
    main()
