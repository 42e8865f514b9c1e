"""Example workload: draw numbers, save them, report statistics and a range check through Pipes.

Runs wherever the job runs (laptop or compute node) and needs only dagster-pipes.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
from pathlib import Path

from dagster_pipes import open_dagster_pipes


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    with open_dagster_pipes() as pipes:
        rng = random.Random(args.seed)
        values = [rng.gauss(50.0, 10.0) for _ in range(args.count)]
        out = Path(os.environ["HPC_DATA_DIR"]) / "raw" / "numbers.csv"
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".csv.tmp")
        tmp.write_text("value\n" + "".join(f"{v:.6f}\n" for v in values), encoding="utf-8")
        tmp.replace(out)  # never leave a half-written file behind
        pipes.log.info(f"wrote {len(values)} numbers to {out} on {os.uname().nodename}")

        pipes.report_asset_materialization(
            metadata={
                "rows": len(values),
                "mean": round(statistics.fmean(values), 4),
                "stdev": round(statistics.stdev(values), 4),
                "path": {"raw_value": str(out), "type": "path"},
            }
        )
        outside = sum(1 for v in values if not 0.0 <= v <= 100.0)
        pipes.report_asset_check(
            check_name="values_in_range",
            passed=outside == 0,
            severity="WARN",
            metadata={"outside_0_100": outside},
        )


if __name__ == "__main__":
    main()
