"""Example workload: the spread of the ensemble members' final positions."""

from __future__ import annotations

import os
import statistics
from pathlib import Path

from dagster_pipes import open_dagster_pipes


def main() -> None:
    with open_dagster_pipes() as pipes:
        folder = Path(os.environ["HPC_DATA_DIR"]) / "ensemble"
        positions = [float(path.read_text()) for path in sorted(folder.glob("member-*.txt"))]
        if len(positions) < 2:
            raise SystemExit(f"need at least two members in {folder}, found {len(positions)}")
        pipes.report_asset_materialization(
            metadata={"members": len(positions), "mean": round(statistics.fmean(positions), 4),
                      "stdev": round(statistics.stdev(positions), 4)})


if __name__ == "__main__":
    main()
