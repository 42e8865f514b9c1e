"""Partitioned assets launched the way the UI launches a single-run backfill (`dg dev`'s GraphQL API,
a run tagged with the partition range, default multiprocess executor): on the test cluster one
`sbatch --array` per run, each partition materialized through its own Pipes channel; a failing task
fails only its partition and a re-execution from failure runs only that one; Terminate cancels the
array; locally, at most submission.max_concurrent processes at once."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import textwrap
import time
import uuid
from pathlib import Path

import dagster as dg
import pytest

from tests.conftest import copy_project
from tests.integration.ui import DagsterUI, failure_metadata, failures, run_logs

pytestmark = pytest.mark.integration

# Checks that the key reached it both ways, logs when it starts and ends, fails while <flags>.<key> exists.
PROBE = """\
import os, sys, time
from dagster_pipes import open_dagster_pipes

flags, seconds, log = sys.argv[1], float(sys.argv[2]), sys.argv[3]
with open_dagster_pipes() as pipes:
    key = pipes.partition_key
    with open(log, "a") as f:
        f.write(f"start {key} {time.time()}\\n")
    time.sleep(seconds)
    if os.path.exists(f"{flags}.{key}"):
        print(f"partition {key}: input file missing", file=sys.stderr)
        sys.exit(3)
    with open(log, "a") as f:
        f.write(f"end {key} {time.time()}\\n")
    pipes.log.info(f"partition {key} done")
    pipes.report_asset_materialization(metadata={"key_seen": key, "env_key": os.environ["HPC_PARTITION_KEY"]})
"""
TERMINATE = """
mutation($id: String!) { terminateRun(runId: $id) {
  __typename ... on TerminateRunFailure { message } ... on PythonError { message }
} }"""

# A directory the job user (slurmuser) can read: the failure flags live here.
FLAGS = Path(f"/tmp/hpc-array-test-{uuid.uuid4().hex[:8]}")
ASSETS = {
    # name: (cluster, keys, max_concurrent, seconds)
    "ok": ("docker", ["a", "b", "c"], 2, 0.5),
    "flaky": ("docker", ["p1", "p2", "p3", "p4"], 4, 0.5),
    "slow": ("docker", ["s1", "s2", "s3"], 2, 120),
    "orphan": ("docker", ["o1", "o2", "o3"], 3, 8),
    "here": ("local", ["l1", "l2", "l3", "l4", "l5"], 2, 1.5),
}


@pytest.fixture(scope="module")
def ui(slurm_cluster, tmp_path_factory):
    FLAGS.mkdir(mode=0o755, exist_ok=True)
    os.chmod(FLAGS, 0o777)
    project = copy_project(tmp_path_factory.mktemp("arrays"))
    (project / "workloads" / "probe.py").write_text(PROBE)
    for name, (cluster, keys, k, seconds) in ASSETS.items():
        folder = project / "defs" / "arrays" / name
        folder.mkdir(parents=True)
        log = project / f"{name}.log" if cluster == "local" else "/dev/null"
        folder.joinpath("defs.yaml").write_text(textwrap.dedent(f"""\
            type: components.SlurmAssetComponent
            attributes:
              assets:
                - key: arrays/{name}
              script: probe.py
              args: ["{FLAGS}/{name}", "{seconds}", "{log}"]
              cluster: {cluster}
              partitions:
                static: {keys}
              submission: {{max_concurrent: {k}}}
              resources: {{time: "00:05:00", mem: 200M}}
            """))
    config = project / ".dagster" / "dagster.yaml"
    config.write_text(config.read_text() + "run_coordinator:\n  module: dagster.core.run_coordinator\n  class: DefaultRunCoordinator\n")
    server = DagsterUI(project)
    yield server
    server.stop()
    subprocess.run(["rm", "-rf", str(FLAGS)], check=False)


def _backfill(ui: DagsterUI, name: str, first: str, last: str) -> str:
    """A single-run backfill of first..last, as the UI launches it for a single_run backfill policy."""
    return ui.launch([f"arrays/{name}"], tags={"dagster/asset_partition_range_start": first,
                                               "dagster/asset_partition_range_end": last})


def _partition_materializations(instance, name: str, keys: list[str]) -> dict[str, tuple[str, dict]]:
    """{partition: (run id, metadata)} of each partition's latest materialization."""
    out = {}
    for key in keys:
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey(["arrays", name]), asset_partitions=[key]), limit=1).records
        if records:
            meta = records[0].asset_materialization.metadata
            out[key] = (records[0].run_id, {k: v.value for k, v in meta.items()})
    return out


def _sacct_tasks(run_id: str, tries: int = 20) -> list[str]:
    """Job ids (as sacct prints them, 123_4 for an array task) of every job whose directory belongs to the run."""
    for _ in range(tries):
        out = subprocess.run(["sacct", "-X", "-n", "-P", "-a", "-S", "now-3hours", "-o", "JobID,WorkDir"],
                             capture_output=True, text=True, timeout=60).stdout
        ids = sorted({line.split("|")[0] for line in out.splitlines() if f"/jobs/{run_id}/" in line.split("|", 1)[1] + "/"})
        if ids and not any("[" in i for i in ids):
            return ids
        time.sleep(0.5)
    return ids


def test_backfill_is_one_array_and_each_partition_has_its_own_materialization(ui):
    run_id = _backfill(ui, "ok", "a", "c")
    assert ui.wait(run_id, timeout=120) == "SUCCESS", failures(ui.instance(), run_id)
    instance = ui.instance()
    tasks = _sacct_tasks(run_id)
    # ONE sbatch: three tasks of one array job.
    assert len(tasks) == 3 and len({t.split("_")[0] for t in tasks}) == 1, tasks
    array_id = tasks[0].split("_")[0]
    found = _partition_materializations(instance, "ok", ["a", "b", "c"])
    assert set(found) == {"a", "b", "c"}
    for index, key in enumerate(["a", "b", "c"]):
        run, meta = found[key]
        assert run == run_id
        # Its own Pipes channel: the key it saw, its own task id and sacct figures.
        assert (meta["key_seen"], meta["env_key"], meta["partition_key"]) == (key, key, key)
        assert meta["slurm_job_id"] == f"{array_id}_{index}", meta["slurm_job_id"]
        assert meta["slurm_state"] == "COMPLETED" and meta["exit_code"] == 0
        assert isinstance(meta["queue_wait_s"], int | float) and meta["job_dir"].endswith(f"/tasks/{index}")
        assert "#SBATCH --array=0-2%2" in meta["job_script"]
    logs = run_logs(instance, run_id)
    assert sum("submitted Slurm job array" in m for m in logs) == 1
    assert any("partition b done" in m for m in logs)


def test_failed_task_fails_only_its_partition_and_reexecution_runs_only_it(ui):
    flag = FLAGS / "flaky.p2"
    flag.write_text("")
    flag.chmod(0o644)
    run_id = _backfill(ui, "flaky", "p1", "p4")
    assert ui.wait(run_id, timeout=120) == "FAILURE"
    instance = ui.instance()
    text = failures(instance, run_id)
    assert "1 of 4 partitions failed: p2" in text, text
    assert "partition p2: task" in text and "ended FAILED (exit code 3)" in text
    assert "partition p2: input file missing" in text  # its stderr tail
    assert failure_metadata(instance, run_id)["failed_partitions"] == "p2"
    found = _partition_materializations(instance, "flaky", ["p1", "p2", "p3", "p4"])
    # Recorded before the step failed: the three that succeeded, each from this run with its own task id.
    assert sorted(found) == ["p1", "p3", "p4"] and {run for run, _ in found.values()} == {run_id}
    assert len({meta["slurm_job_id"] for _, meta in found.values()}) == 3
    first_tasks = _sacct_tasks(run_id)
    assert len(first_tasks) == 4 and len({t.split("_")[0] for t in first_tasks}) == 1

    flag.unlink()
    rerun = ui.reexecute(run_id)
    assert ui.wait(rerun, timeout=120) == "SUCCESS", failures(ui.instance(), rerun)
    instance = ui.instance()
    # Only p2 ran again: an array of one task.
    again = _sacct_tasks(rerun)
    assert len(again) == 1 and again[0].endswith("_0"), again
    assert any("3 of 4 partitions were materialized earlier" in m for m in run_logs(instance, rerun))
    found = _partition_materializations(instance, "flaky", ["p1", "p2", "p3", "p4"])
    run, meta = found["p2"]
    assert run == rerun and meta["key_seen"] == "p2" and meta["slurm_job_id"] == again[0]
    # The others keep the figures of the run that computed them.
    assert found["p1"][1]["materialized_by_run"] == run_id and found["p1"][1]["slurm_job_id"] in first_tasks


def test_terminate_cancels_every_task_of_the_array(ui):
    run_id = _backfill(ui, "slow", "s1", "s3")
    deadline = time.monotonic() + 90
    running = []
    while time.monotonic() < deadline and len(running) < 2:
        running = _run_tasks(run_id, "RUNNING")
        time.sleep(0.3)
    assert len(running) == 2, "two tasks (max_concurrent) never ran"  # the third waits: %2
    answer = ui.query(TERMINATE, {"id": run_id})["terminateRun"]
    assert answer["__typename"] == "TerminateRunSuccess", answer
    sent = time.monotonic()
    left = "x"
    while left and time.monotonic() - sent < 20:
        left = " ".join(_run_tasks(run_id, "PENDING,RUNNING"))
        time.sleep(0.3)
    assert not left, f"tasks still queued or running {time.monotonic() - sent:.0f}s after Terminate: {left}"
    assert ui.wait(run_id, timeout=60) == "CANCELED"
    assert any("cancelling Slurm job array" in m for m in run_logs(ui.instance(), run_id))


def test_killed_orchestrator_then_reexecution_reattaches_to_the_running_array(ui):
    run_id = _backfill(ui, "orphan", "o1", "o3")
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and not _run_tasks(run_id, "RUNNING"):
        time.sleep(0.3)
    instance = ui.instance()
    assert _kill_run_tree(instance, run_id) >= 2  # the run worker and the step's
    instance.report_run_failed(instance.get_run_by_id(run_id))  # what run monitoring does for a dead worker
    assert _run_tasks(run_id, "PENDING,RUNNING"), "the array should still be running"
    rerun = ui.reexecute(run_id)
    assert ui.wait(rerun, timeout=120) == "SUCCESS", failures(ui.instance(), rerun)
    instance = ui.instance()
    first = _sacct_tasks(run_id)
    # Nothing submitted again: no job has a directory of the re-execution.
    assert len(first) == 3 and _sacct_tasks(rerun, tries=1) == []
    logs = run_logs(instance, rerun)
    assert any(f"re-attaching to Slurm job array {first[0].split('_')[0]}" in m for m in logs), logs
    assert not any("submitted Slurm job array" in m for m in logs)
    found = _partition_materializations(instance, "orphan", ["o1", "o2", "o3"])
    assert {key: (run, meta["slurm_job_id"], meta["key_seen"]) for key, (run, meta) in found.items()} == {
        key: (rerun, task, key) for key, task in zip(["o1", "o2", "o3"], first)}


def _kill_run_tree(instance, run_id: str) -> int:
    """SIGKILL the run's processes and everything below them: a dead orchestrator. The run worker and
    the step workers say their pids in the run's engine events ("... (pid: 123)")."""
    pids = {int(m) for text in run_logs(instance, run_id) for m in re.findall(r"pid: (\d+)", text)}
    procs = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                procs[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    doomed, grew = {pid for pid in pids if pid in procs and pid != os.getpid()}, True
    while grew:
        below = {pid for pid, ppid in procs.items() if ppid in doomed} - doomed
        grew = bool(below)
        doomed |= below
    for pid in doomed:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return len(doomed)


def _run_tasks(run_id: str, states: str) -> list[str]:
    """Ids of the run's jobs (array tasks) in these states, as root's squeue sees them."""
    out = subprocess.run(["squeue", "-h", "-a", "-t", states, "-o", "%i|%Z"], capture_output=True, text=True, timeout=60)
    return [line.split("|")[0] for line in out.stdout.splitlines() if f"/jobs/{run_id}/" in line + "/"]


def test_local_mode_runs_each_partition_at_most_k_at_a_time(ui):
    run_id = _backfill(ui, "here", "l1", "l5")
    assert ui.wait(run_id, timeout=120) == "SUCCESS", failures(ui.instance(), run_id)
    events = []
    for line in (ui.project / "here.log").read_text().splitlines():
        kind, key, stamp = line.split()
        events.append((float(stamp), 1 if kind == "start" else -1, key))
    running = peak = 0
    for _, step, _ in sorted(events):
        running += step
        peak = max(peak, running)
    assert peak == 2, f"{peak} partitions at once (max_concurrent: 2)"
    assert sorted(key for _, step, key in events if step == 1) == ["l1", "l2", "l3", "l4", "l5"]
    found = _partition_materializations(ui.instance(), "here", ["l1", "l2", "l3", "l4", "l5"])
    assert {key: meta["key_seen"] for key, (_, meta) in found.items()} == {k: k for k in ["l1", "l2", "l3", "l4", "l5"]}
    assert all(meta["slurm_job_id"].startswith("n/a") and meta["elapsed_s"] >= 1.5 for _, meta in found.values())


def test_a_run_of_one_partition_stays_one_process_with_its_key(ui):
    run_id = ui.launch(["arrays/here"], tags={"dagster/partition": "l3"})
    assert ui.wait(run_id, timeout=120) == "SUCCESS", failures(ui.instance(), run_id)
    found = _partition_materializations(ui.instance(), "here", ["l3"])
    run, meta = found["l3"]
    assert run == run_id and (meta["key_seen"], meta["env_key"]) == ("l3", "l3")
    assert not any("running 1 partition(s) locally" in m for m in run_logs(ui.instance(), run_id))
