"""The pure parts of bench/allocations.py: the waiting profile, the assets' YAML, sacct parsing and figures
(sacct text as Slurm 22.05 on the test cluster prints it)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("bench_allocations", ROOT / "bench" / "allocations.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)

RUN = "dbe0e525-bb48-4bfa-a720-3fcfa295c3b9"
HOME = "/home/slurmuser/dagster-hpc/jobs"
SACCT = f"""\
1401|alloc-dbe0e525|{HOME}/{RUN}/allocation-1796401321|2026-12-04T16:22:01|2026-12-04T16:22:23|2026-12-04T16:22:41|18|2|COMPLETED
1401.batch|batch||2026-12-04T16:22:23|2026-12-04T16:22:23|2026-12-04T16:22:41|18|2|COMPLETED
1401.extern|extern||2026-12-04T16:22:23|2026-12-04T16:22:23|2026-12-04T16:22:41|18|2|COMPLETED
1401.0|sleeper_00.1||2026-12-04T16:22:24|2026-12-04T16:22:24|2026-12-04T16:22:27|3|1|COMPLETED
1401.1|sleeper_01.1||2026-12-04T16:22:24|2026-12-04T16:22:24|2026-12-04T16:22:27|3|1|COMPLETED
1402|sleeper_00|{HOME}/{RUN}x/sleeper_00-1|2026-12-04T16:24:43|2026-12-04T16:25:29|2026-12-04T16:25:31|2|1|COMPLETED
1403|wrap|/home/slurmuser|2026-12-04T16:24:44|2026-12-04T16:25:29|2026-12-04T16:25:31|2|1|COMPLETED
"""


def test_waiting_profile_adds_begin_to_the_profile_and_loads():
    original = (ROOT / "clusters" / "docker.yaml").read_text()
    data = yaml.safe_load(bench.waiting_profile(original, 20))
    assert data["slurm"]["extra_directives"] == ["--begin=now+20"]
    assert data["ssh"] == yaml.safe_load(original)["ssh"]  # the same cluster, only held
    assert "extra_directives" not in yaml.safe_load(bench.waiting_profile(original, 0))["slurm"]
    with_own = yaml.safe_load(bench.waiting_profile("slurm: {extra_directives: ['--comment=x']}\n", 5))
    assert with_own["slurm"]["extra_directives"] == ["--comment=x", "--begin=now+5"]
    with pytest.raises(ValueError, match=">= 0"):
        bench.waiting_profile(original, -1)


def test_waiting_profile_renders_begin_on_the_allocation(tmp_path):
    """Profile-level directives reach the allocation's sbatch lines, which is why the bench uses them."""
    from components.core import allocation as A
    from components.core.profiles import load_profile
    from tests.conftest import copy_project

    project = copy_project(tmp_path)
    (project / "clusters" / "docker-wait20.yaml").write_text(
        bench.waiting_profile((ROOT / "clusters" / "docker.yaml").read_text(), 20))
    profile = load_profile("docker-wait20", project / "clusters")
    shape = A.AllocationShape(nodes=1, cpus_per_node=2, mem_mb=None, gpus=0, time_s=600, partition="cpu",
                              qos="normal", account="hpc-test", steps=("a",))
    plan = A.allocation_plan(profile, shape, "alloc-12345678")
    assert "--begin=now+20" in [str(d.option) for d in plan.directives]


def test_asset_yaml_names_mode_and_cluster():
    data = yaml.safe_load(bench.asset_yaml("sleeper_03", "docker-wait20", "run", 2.0))
    assert data["attributes"]["submission"] == {"allocation": "run"}
    assert data["attributes"]["cluster"] == "docker-wait20"
    assert data["attributes"]["args"] == ["2"]
    with pytest.raises(ValueError, match="mode"):
        bench.asset_yaml("x", "docker", "array", 2)


def test_run_jobs_keeps_the_runs_jobs_and_srun_steps():
    jobs, steps = bench.run_jobs(bench.parse_sacct(SACCT), RUN)
    # 1402's directory belongs to another run whose id starts with this one's; 1403 is no run's.
    assert [j["JobID"] for j in jobs] == ["1401"]
    assert [s["JobID"] for s in steps] == ["1401.0", "1401.1"]


def test_figures_sum_waits_and_core_seconds():
    rows = bench.parse_sacct(SACCT)
    got = bench.figures(*bench.run_jobs(rows, RUN))
    assert got == {"sbatch_jobs": 1, "alloc_jobs": 1, "asset_jobs": 0, "srun_steps": 2, "queue_wait_s": 22.0, "core_s": 36}
    per_asset = [r | {"WorkDir": f"{HOME}/{RUN}/sleeper_00-1"} for r in rows if r["JobID"] in ("1402", "1403")]
    got = bench.figures(per_asset, [])
    assert got["asset_jobs"] == 2 and got["queue_wait_s"] == 46.0 + 45.0 and got["core_s"] == 4
    pending = [rows[0] | {"Start": "Unknown", "End": "Unknown", "State": "PENDING"}]
    with pytest.raises(ValueError, match="1401"):
        bench.figures(pending, [])


def test_table_medians_and_ratio():
    sample = dict.fromkeys(bench.MEASURES, 10.0)
    by_wait = {20: {"job": bench.medians([sample, sample | {"wall_s": 30.0}, sample]),
                    "run": bench.medians([sample | {"sbatch_jobs": 1.0}] * 3)}}
    text = bench.table(by_wait, 3)
    assert "| 20 | sbatch_jobs | 10.0 | 1.0 | 0.10x |" in text
    assert "| 20 | wall_s | 10.0 | 10.0 | 1.00x |" in text  # the median, not the mean
