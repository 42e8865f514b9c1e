"""Workload of RayDoclingComponent: convert the new and changed documents, batch by batch.

Runs on the compute side with the docling extra installed. Locally Ray starts here; in a Slurm
job the job script has started a Ray cluster over the allocation and set RAY_ADDRESS.
"""

import sys

from dagster_pipes import open_dagster_pipes

from hpc_runtime.documents import MissingPackages, MissingWeights, convert_increment
from hpc_runtime.job import FeatureJob


def main() -> None:
    with open_dagster_pipes() as pipes:
        summary = convert_increment(FeatureJob.from_env(), log=pipes.log.info)
        for failure in summary["failures"][:20]:
            pipes.log.warning(f"failed: {failure}")
        pipes.report_asset_materialization(metadata={
            "converted": summary["converted"] + summary["partial"],
            "partial": summary["partial"],
            "failed": summary["failed"],
            "pages": summary["pages"],
            "docs_per_s": {"raw_value": summary["docs_per_s"], "type": "float"},
            "failures": {"raw_value": summary["failures"][:50], "type": "json"},
        })


if __name__ == "__main__":
    try:
        main()
    except (MissingPackages, MissingWeights) as exc:
        sys.exit(f"error: {exc}")  # a setup problem: the message says what to do, a traceback would not
