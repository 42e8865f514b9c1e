"""Per-job overhead of SlurmAssetComponent over a bare sbatch + squeue poll, same cluster, same process.

    HPC_TEST_CLUSTER_DIR=/tmp/hpc-test-cluster .venv/bin/python bench/slurm_overhead.py [--runs 20]

Needs the test cluster (bash scripts/test-cluster.sh up). Both sides run the same no-op payload
through the same SSH connection; the baseline polls squeue every 0.1 s, as tight as a hand-written
loop would. Prints medians and the ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import dagster as dg  # noqa: E402

from components.core.profiles import load_profile  # noqa: E402
from components.core.ssh import target_for, transport_for  # noqa: E402
from tests.conftest import copy_project  # noqa: E402


def baseline(transport, account: str) -> float:
    started = time.perf_counter()
    job_id = transport.run(
        f"cd /tmp && sbatch --parsable -p cpu -q normal -A {account} -t 1 -c 1 --mem=100M -o /dev/null "
        "--wrap='/usr/bin/python3 -c pass'"
    ).stdout.strip().split(";")[0]
    while transport.run(f"squeue -h -j {job_id} -t PD,R,CG -o %T", check=False).stdout.strip():
        time.sleep(0.1)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    profile = load_profile("docker", ROOT / "clusters")
    transport = transport_for(target_for(profile))
    account = profile.account()

    with tempfile.TemporaryDirectory() as tmp:
        project = copy_project(Path(tmp))
        (project / "workloads" / "noop.py").write_text("pass\n")
        (project / "defs" / "noop").mkdir()
        (project / "defs" / "noop" / "defs.yaml").write_text(textwrap.dedent("""\
            type: components.SlurmAssetComponent
            attributes:
              assets: [{key: noop}]
              script: noop.py
              cluster: docker
              resources: {time: "00:01:00", mem: 100M}
            """))
        sys.path.insert(0, str(project))
        os.chdir(project)
        defs = dg.ComponentTree.for_project(project).build_defs()
        job = defs.resolve_implicit_global_asset_job_def()
        instance = dg.DagsterInstance.ephemeral()

        def ours() -> float:
            started = time.perf_counter()
            result = job.execute_in_process(instance=instance, asset_selection=[dg.AssetKey("noop")])
            assert result.success
            return time.perf_counter() - started

        ours(), baseline(transport, account)  # warm-up: venv build, imports, connection
        base_times, our_times = [], []
        for _ in range(args.runs):
            base_times.append(baseline(transport, account))
            our_times.append(ours())
    b, o = statistics.median(base_times), statistics.median(our_times)
    print(f"runs: {args.runs} each, interleaved")
    print(f"bare sbatch + squeue poll : median {b:.3f} s (min {min(base_times):.3f}, max {max(base_times):.3f})")
    print(f"SlurmAssetComponent       : median {o:.3f} s (min {min(our_times):.3f}, max {max(our_times):.3f})")
    print(f"overhead                  : {o - b:+.3f} s per job, ratio {o / b:.2f}x")


if __name__ == "__main__":
    main()
