"""Example partitioned workload: one region per task. On Slurm a backfill of N regions is one job
array; each task reads its region from the Pipes context (or $HPC_PARTITION_KEY) and reports it."""

from __future__ import annotations

import os
import random
from pathlib import Path

from dagster_pipes import open_dagster_pipes


def main() -> None:
    with open_dagster_pipes() as pipes:
        region = pipes.partition_key  # the same value as os.environ["HPC_PARTITION_KEY"]
        rng = random.Random(region)
        counts = [rng.randint(0, 1000) for _ in range(100)]
        out = Path(os.environ["HPC_DATA_DIR"]) / "regions" / f"{region}.csv"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("count\n" + "".join(f"{c}\n" for c in counts), encoding="utf-8")
        pipes.log.info(f"region {region}: {len(counts)} counts on {os.uname().nodename}")
        pipes.report_asset_materialization(metadata={"region": region, "total": sum(counts), "rows": len(counts)})


if __name__ == "__main__":
    main()
