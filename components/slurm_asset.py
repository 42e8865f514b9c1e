"""SlurmAssetComponent: a workload script that materializes assets locally or as a Slurm job.

The component only translates YAML into calls on components.core: profile loading, job planning,
script rendering and execution (shared with the other components in components/workload.py).
Override `get_job_spec` or `execute` to customise.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Literal

import dagster as dg
from pydantic import BaseModel, Field

from components.core.errors import ConfigError
from components.core.job_record import RemotePolicy
from components.core.render import WORKLOADS_DIR
from components.workload import PartitionsSpec, WorkloadComponent, _doc, _placed

class ScaffoldParams(BaseModel):
    script: str | None = Field(None, description="Workload file name under workloads/ (default: <name>.py).")
    launcher: Literal["python", "bash"] = "python"
    cluster: str | None = Field(None, description="Cluster profile name (default: $HPC_CLUSTER, else [tool.hpc] cluster, else local).")


_PYTHON_STUB = """\
\"\"\"Workload for asset {asset}: runs on the compute side and needs only dagster-pipes.\"\"\"

from dagster_pipes import open_dagster_pipes


def main() -> None:
    with open_dagster_pipes() as pipes:
        pipes.log.info("computing {asset}")
        rows = 42  # replace with the real work
        pipes.report_asset_materialization(metadata={{"rows": rows}})


if __name__ == "__main__":
    main()
"""

_BASH_STUB = """\
#!/bin/bash
# Workload for asset {asset}. Logs go to stdout/stderr; exit non-zero to fail the step.
set -euo pipefail
echo "computing {asset} on $(hostname)"
"""


class SlurmAssetScaffolder(dg.Scaffolder[ScaffoldParams]):
    """`dg scaffold defs components.SlurmAssetComponent NAME`: a defs.yaml and a workload stub."""

    @classmethod
    def get_scaffold_params(cls) -> type[ScaffoldParams]:
        return ScaffoldParams

    def scaffold(self, request: dg.ScaffoldRequest[ScaffoldParams]) -> None:
        params = request.params
        name = request.target_path.name
        suffix = ".py" if params.launcher == "python" else ".sh"
        stem = name
        if params.launcher == "python" and name in sys.stdlib_module_names:
            stem = f"{name}_job"  # Python would import workloads/json.py instead of the standard module
        script = params.script or f"{stem}{suffix}"
        project_root = request.project_root or Path.cwd()
        workload = project_root / WORKLOADS_DIR / script
        if not workload.exists():
            workload.parent.mkdir(parents=True, exist_ok=True)
            stub = _PYTHON_STUB if params.launcher == "python" else _BASH_STUB
            workload.write_text(stub.format(asset=name), encoding="utf-8")
        attributes: dict = {
            "assets": [{"key": name, "kinds": ["slurm"], "description": f"Computed by workloads/{script}"}],
            "script": script,
            "launcher": params.launcher,
            "resources": {"cpus_per_task": 1, "mem": "2G", "time": "00:10:00"},
        }
        if params.cluster:
            attributes["cluster"] = params.cluster
        dg.scaffold_component(request, attributes)


@dg.scaffold_with(SlurmAssetScaffolder)
class SlurmAssetComponent(WorkloadComponent):
    """Assets computed by a workload script that runs locally or as a Slurm job on an HPC cluster.

    The workload (under workloads/) reports logs, metadata and asset checks through Dagster Pipes.
    The cluster comes from `cluster`, else $HPC_CLUSTER, else `[tool.hpc] cluster`, else `local`; its profile in clusters/
    turns `resources` into site-correct #SBATCH directives. Preview the job script with
    `hpc render defs/<path> --cluster <name>`.

    Examples:
        .. code-block:: yaml

            type: components.SlurmAssetComponent
            attributes:
              assets:
                - key: features/embeddings
              script: embed.py
              resources: {gpus: 1, mem: 32G, time: "02:00:00"}
              cluster: leonardo
    """

    assets: Annotated[
        Sequence[dg.ResolvedAssetSpec],
        _doc("Assets the workload materializes (key, deps, group_name, kinds, description, owners, tags, metadata).",
             [{"key": "raw/numbers", "group_name": "examples"}]),
    ]
    checks: Annotated[
        Sequence[dg.ResolvedAssetCheckSpec] | None,
        _doc("Asset checks the workload reports with report_asset_check.", [{"name": "no_nulls", "asset": "raw/numbers"}]),
    ] = None
    partitions: Annotated[
        PartitionsSpec | None,
        _doc("Partitions of the assets (one kind: static, daily, hourly or dynamic). A backfill of N partitions is one run "
             "and, on Slurm, one job array (sbatch --array=0-(N-1)%K, K = submission.max_concurrent); each task gets "
             "$HPC_PARTITION_KEY and the key in its Pipes context, and each partition its own materialization.",
             {"static": ["north", "south"]}, {"daily": {"start": "2026-01-01", "timezone": "Europe/Vienna"}}),
    ] = None

    def asset_keys(self) -> list[dg.AssetKey]:
        return [spec.key for spec in self.assets]

    def partitions_def(self) -> dg.PartitionsDefinition | None:
        return None if self.partitions is None else self.partitions.definition()

    def remote_policy(self, project_root: Path | None = None) -> RemotePolicy:
        # A partitioned asset is its own job or job array, never a step of the run's allocation: a backfill
        # step would be counted when the allocation is sized and then never come (it submits an array).
        policy = super().remote_policy(project_root)
        return replace(policy, allocation="job") if self.partitions is not None else policy

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        project_root = Path(context.project_root)
        defs_file = Path(context.path) / "defs.yaml"
        try:
            plan = self.plan(project_root)
            partitions_def = self.partitions_def()
        except (ConfigError, ValueError) as exc:
            raise _placed(exc, defs_file) from None

        @dg.multi_asset(
            name=self.op_name,
            specs=self.assets,
            check_specs=self.checks,
            description=f"{self.launcher} workload {WORKLOADS_DIR}/{plan.job.workload}",
            op_tags=self.op_tags(plan, project_root),
            partitions_def=partitions_def,
            # A backfill of N partitions is one run (one job array), not N runs.
            backfill_policy=dg.BackfillPolicy.single_run() if partitions_def is not None else None,
        )
        def _assets(context):  # unannotated: string annotations confuse dagster's check
            # Re-plan at run time: the environment (cluster, account) may differ from load time.
            run_plan = self.plan(project_root, strict=True, extra_env=self.partition_env(context))
            _say_not_branched(context)
            yield from self.execute(context, project_root, run_plan)

        return dg.Definitions(assets=[_assets])


def _say_not_branched(context) -> None:
    """A run on a branch (core.branches) redirects Metaxy features only: say that this asset is not one."""
    from components.core.branches import BRANCH_ENV, BRANCH_TAG

    name = context.run.tags.get(BRANCH_TAG) or os.environ.get(BRANCH_ENV)
    if name:
        context.log.warning(f"this run is on branch {name}, but these assets are not Metaxy features: "
                            "they run and write as they do on main")
