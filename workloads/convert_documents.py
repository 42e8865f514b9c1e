"""Workload of RayDoclingComponent: convert the new and changed documents as they come.

Runs on the compute side with the docling extra installed. With `ray.workers: auto` (the default)
it converts in this process and starts Ray only when the increment is large enough to gain from
it; in a Slurm job the job script has started a Ray cluster over the allocation and set RAY_ADDRESS.
"""

import sys

from dagster_pipes import open_dagster_pipes

from hpc_runtime.documents import MissingPackages, MissingWeights, convert_increment
from hpc_runtime.job import FeatureJob

LISTED = 50  # documents named per status in the metadata; the store holds every one


def main() -> None:
    with open_dagster_pipes() as pipes:
        summary = convert_increment(FeatureJob.from_env(), log=pipes.log.info)
        for failure in summary["failures"][:20]:
            pipes.log.warning(f"failed: {failure}")
        for partial in summary["partials"][:20]:
            pipes.log.warning(f"partial: {partial}")
        conversion = summary["conversion"]
        pipes.report_asset_materialization(metadata={
            "converted": summary["converted"],
            "partial": summary["partial"],
            "failed": summary["failed"],
            "pages": summary["pages"],
            "docs_per_s": {"raw_value": summary["docs_per_s"], "type": "float"},
            "failures": {"raw_value": summary["failures"][:LISTED], "type": "json"},
            "partials": {"raw_value": summary["partials"][:LISTED], "type": "json"},
            "conversion": {"raw_value": f"{conversion.get('decision')}; {conversion.get('local_docs', 0)} in the workload's process, "
                                        f"{conversion.get('ray_docs', 0)} on {conversion.get('workers', 0)} Ray worker(s); "
                                        f"{conversion.get('stopped', 0)} stopped at the time limit", "type": "text"},
            "device": ", ".join(conversion.get("devices", [])) or "none",
        })


if __name__ == "__main__":
    try:
        main()
    except (MissingPackages, MissingWeights) as exc:
        sys.exit(f"error: {exc}")  # a setup problem: the message says what to do, a traceback would not
