"""Example workload: one member of a small ensemble (a random walk with its own seed).

Each member is its own asset; with `submission.allocation: run` the members and their summary run as
job steps of one Slurm allocation instead of one job each.
"""

from __future__ import annotations

import argparse
import os
import random
from pathlib import Path

from dagster_pipes import open_dagster_pipes


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--steps", type=int, default=10_000)
    args = parser.parse_args()

    with open_dagster_pipes() as pipes:
        rng = random.Random(args.seed)
        position = 0.0
        for _ in range(args.steps):
            position += rng.gauss(0.0, 1.0)
        out = Path(os.environ["HPC_DATA_DIR"]) / "ensemble" / f"member-{args.seed}.txt"
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp")
        tmp.write_text(f"{position:.6f}\n", encoding="utf-8")
        tmp.replace(out)  # never leave a half-written file behind
        where = f"job step {os.environ['SLURM_JOB_ID']}.{os.environ['SLURM_STEP_ID']}" if "SLURM_STEP_ID" in os.environ else "locally"
        pipes.log.info(f"member {args.seed}: final position {position:.3f} ({where})")
        pipes.report_asset_materialization(metadata={"seed": args.seed, "final_position": round(position, 4)})


if __name__ == "__main__":
    main()
