"""Run-scoped allocations on the real test cluster, launched from the UI (GraphQL, multiprocess executor):
one allocation for the run's steps, steps side by side as srun job steps, a step that does not fit
in a job of its own, Terminate releasing it, and a dead orchestrator whose allocation ends itself."""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path

import pytest

from tests.conftest import copy_project
from tests.integration.conftest import ssh_as_user
from tests.integration.test_slurm_asset_remote import _asset, _workload
from tests.integration.ui import DagsterUI, failures, materializations, run_logs

pytestmark = pytest.mark.integration

SLEEPER = """
import os, sys, time
from dagster_pipes import open_dagster_pipes
with open_dagster_pipes() as pipes:
    pipes.log.info(f"in job step {os.environ['SLURM_JOB_ID']}.{os.environ.get('SLURM_STEP_ID', 'batch')}")
    time.sleep(float(sys.argv[1]))
    pipes.report_asset_materialization(metadata={"slept_s": float(sys.argv[1])})
"""


@pytest.fixture(scope="module")
def ui(slurm_cluster, tmp_path_factory):
    project = copy_project(tmp_path_factory.mktemp("allocations"))
    # Project-wide: every asset without its own submission.allocation shares the run's allocation.
    pyproject = project / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace("[tool.hpc]", '[tool.hpc]\nallocation = "run"', 1)
                         if "[tool.hpc]" in pyproject.read_text() else pyproject.read_text() + '\n[tool.hpc]\nallocation = "run"\n')
    _workload(project, "sleeper.py", SLEEPER)
    side = 'cpus_per_task: 1, mem: 500M, time: "00:03:00"'
    _asset(project, "left", "sleeper.py", resources=side, extra="args: [8]\n")
    _asset(project, "right", "sleeper.py", resources=side, extra="args: [8]\n")
    _asset(project, "after_left", "sleeper.py", resources=side, extra="args: [1]\n")
    (project / "defs" / "after_left" / "defs.yaml").write_text(
        (project / "defs" / "after_left" / "defs.yaml").read_text().replace("- key: after_left", "- key: after_left\n      deps: [left]"))
    _asset(project, "on_debug", "sleeper.py", resources='partition_class: debug, time: "00:03:00"', extra="args: [1]\n")
    _asset(project, "own_job", "sleeper.py", resources='time: "00:03:00", extra_directives: ["--comment=alone"]',
           extra="args: [1]\n")
    _asset(project, "slow", "sleeper.py", resources='time: "00:10:00"', extra="args: [300]\n")
    _asset(project, "abandoned", "sleeper.py", resources='time: "00:10:00"',
           extra='args: [300]\nsubmission: {allocation_idle_timeout: "00:00:05", outage_tolerance: "00:00:15"}\n')
    _asset(project, "survivor", "sleeper.py", resources='time: "00:05:00"', extra="args: [12]\n")
    _workload(project, "broken.py", "import sys\nprint('cannot parse row 7', file=sys.stderr)\nsys.exit(4)\n")
    _asset(project, "broken", "broken.py", resources='time: "00:02:00"')
    _asset(project, "fine", "sleeper.py", resources='time: "00:02:00"', extra="args: [3]\n")
    ui = DagsterUI(project)
    yield ui
    ui.stop()


def _sacct(job_id: str) -> dict[str, dict]:
    out = ssh_as_user(Path(ui_state()), f"sacct -j {job_id} -n -P --format=JobID,JobName,State,Start,End")
    rows = {}
    for line in out.splitlines():
        job, name, state, start, end = line.split("|")
        rows[job] = {"name": name, "state": state.split()[0], "start": _time(start), "end": _time(end)}
    return rows


def ui_state() -> str:
    import os

    return os.environ["HPC_TEST_CLUSTER_DIR"]


def _time(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def _allocation_of(ui: DagsterUI, run_id: str) -> str:
    tags = ui.instance().get_run_by_id(run_id).tags
    return str(json.loads(tags["hpc/allocation/docker/cpu"])["job_id"])


def _wait_step_running(ui: DagsterUI, run_id: str, step: str, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        tags = ui.instance().get_run_by_id(run_id).tags
        if "hpc/allocation/docker/cpu" in tags:
            alloc = _allocation_of(ui, run_id)
            if alloc.isdigit():
                steps = ssh_as_user(Path(ui_state()), f"squeue -h -s -j {alloc} -o '%i|%j'", check=False)
                if f"|{step}" in steps:
                    return alloc
        time.sleep(0.5)
    raise AssertionError(f"step {step} of run {run_id} never ran: {run_logs(ui.instance(), run_id)[-10:]}")


def _wait_gone(job_id: str, timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if not ssh_as_user(Path(ui_state()), f"squeue -h -j {job_id} -o %T", check=False).strip():
            return time.monotonic() - started
        time.sleep(0.5)
    raise AssertionError(f"allocation {job_id} still in the queue after {timeout}s")


def test_the_runs_steps_share_one_allocation_side_by_side(ui):
    # The executor's own limit (one process per core here) must not be what serializes the steps.
    run_id = ui.launch(["left", "right", "after_left", "on_debug", "own_job"],
                       run_config={"execution": {"config": {"multiprocess": {"max_concurrent": 5}}}})
    status = ui.wait(run_id, timeout=300)
    instance = ui.instance()
    assert status == "SUCCESS", failures(instance, run_id)
    meta = materializations(instance, run_id)
    alloc = _allocation_of(ui, run_id)
    shared = {key: meta[key] for key in ("left", "right", "after_left")}
    for key, values in shared.items():
        assert values["slurm_allocation"] == alloc, (key, values)
        assert values["slurm_job_id"].startswith(f"{alloc}.") and values["slurm_state"] == "COMPLETED", values
        assert values["slurm_job_id"] != alloc
    assert len({values["slurm_job_id"] for values in shared.values()}) == 3  # a job step each
    # A step on another partition has the run's allocation there; one that must run alone, a job of its own.
    assert meta["on_debug"]["slurm_allocation"] not in ("", alloc) and meta["on_debug"]["slurm_job_id"].endswith(".0")
    assert "." not in meta["own_job"]["slurm_job_id"] and "slurm_allocation" not in meta["own_job"]
    assert any("own_job runs as its own Slurm job" in m and "--comment=alone" in m for m in run_logs(instance, run_id))
    rows = _sacct(alloc)
    steps = {row["name"]: row for job, row in rows.items() if job.startswith(f"{alloc}.") and job[len(alloc) + 1:].isdigit()}
    assert set(steps) == {"left.1", "right.1", "after_left.1"}, rows
    left, right = steps["left.1"], steps["right.1"]
    assert left["start"] < right["end"] and right["start"] < left["end"], "left and right did not run side by side"
    assert steps["after_left.1"]["start"] >= left["end"]
    # Released as soon as every step of the run had run in it, not after the idle timeout.
    last_end = max(row["end"] for row in steps.values())
    assert rows[alloc]["state"] == "COMPLETED" and (rows[alloc]["end"] - last_end).total_seconds() <= 5, rows[alloc]
    # One sbatch for the three steps on cpu, one for debug's: two allocations for the run.
    names = ssh_as_user(Path(ui_state()), f"sacct -n -X -P --name=alloc-{run_id[:8]} --format=JobID")
    assert sorted(names.split()) == sorted([alloc, meta["on_debug"]["slurm_allocation"]])


def test_terminate_releases_the_allocation(ui):
    run_id = ui.launch(["slow"])
    alloc = _wait_step_running(ui, run_id, "slow.1")
    ui.terminate(run_id)
    waited = _wait_gone(alloc, timeout=30)
    assert waited < 15, f"allocation {alloc} still there {waited:.1f}s after Terminate"
    assert ui.wait(run_id, timeout=60) in ("CANCELED", "FAILURE")
    steps = _sacct(alloc)
    assert steps[alloc]["state"] == "CANCELLED", steps


def test_an_allocation_whose_orchestrator_died_ends_itself(ui):
    run_id = ui.launch(["abandoned"])
    alloc = _wait_step_running(ui, run_id, "abandoned.1")
    assert ui.kill_run_processes(run_id) >= 3  # run worker, step worker, its log capture
    killed = time.monotonic()
    # No heartbeat for outage_tolerance (15 s): the allocation stops its step and ends, no scancel from anyone.
    _wait_gone(alloc, timeout=60)
    elapsed = time.monotonic() - killed
    assert 10 < elapsed < 45, elapsed
    rows = _sacct(alloc)
    assert rows[alloc]["state"] == "COMPLETED", rows  # it ended itself
    step = next(row for row in rows.values() if row["name"] == "abandoned.1")
    assert step["state"] in ("CANCELLED", "FAILED"), step


def test_a_reexecution_reattaches_to_the_job_step_a_dead_orchestrator_left(ui):
    run_id = ui.launch(["survivor"])
    alloc = _wait_step_running(ui, run_id, "survivor.1")
    assert ui.kill_run_processes(run_id) >= 3
    instance = ui.instance()
    instance.report_run_failed(instance.get_run_by_id(run_id))  # what run monitoring does for a dead run worker
    # The step runs on (the orchestrator's outage tolerance is 30 min), ends, and its allocation with it.
    _wait_gone(alloc, timeout=90)
    rerun = ui.reexecute(run_id)
    assert ui.wait(rerun, timeout=180) == "SUCCESS", failures(ui.instance(), rerun)
    instance = ui.instance()
    meta = materializations(instance, rerun)["survivor"]
    assert meta["slurm_allocation"] == alloc and meta["slurm_job_id"].startswith(f"{alloc}.") and meta["slept_s"] == 12.0
    logs = run_logs(instance, rerun)
    assert any("re-attaching" in m for m in logs) and not any("obtained allocation" in m for m in logs)


def test_a_failing_job_step_fails_its_asset_alone(ui):
    run_id = ui.launch(["broken", "fine"])
    assert ui.wait(run_id, timeout=240) == "FAILURE"
    instance = ui.instance()
    text = failures(instance, run_id)
    alloc = _allocation_of(ui, run_id)
    assert f"job step broken.1 of allocation {alloc} on docker ended FAILED (exit code 4)" in text, text
    assert "cannot parse row 7" in text
    assert materializations(instance, run_id)["fine"]["slurm_allocation"] == alloc
    assert _sacct(alloc)[alloc]["state"] == "COMPLETED"  # released once both steps had run
