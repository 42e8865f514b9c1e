"""Faults of the field, provoked for real on the test cluster while runs launched through `dg dev`'s
GraphQL API (the UI's way, default multiprocess executor) follow their Slurm jobs: a login node
that goes away, a controller restart, a database outage, a flaky squeue, a requeue, multi-MB
output bursts, a partial last line, a dead orchestrator, an outage past the tolerance, a hold that
never clears, a 10 MB stderr line.

The rule each test checks: the scheduler and the job directory are the source of truth; nothing is
concluded from missing information, no job is left running unseen, no line is lost.
"""

from __future__ import annotations

import subprocess
import textwrap
import time

import pytest

from tests.conftest import copy_project
from tests.integration.conftest import _cluster
from tests.integration.ui import (
    DagsterUI, captured_output, failure_metadata, failures, materializations, run_logs,
)

pytestmark = pytest.mark.integration

TICKER = """\
import os, sys, time
from dagster_pipes import open_dagster_pipes

seconds, ticks = float(sys.argv[1]), int(sys.argv[2])
with open_dagster_pipes() as pipes:
    for i in range(ticks):
        pipes.log.info(f"tick {i}")
        print(f"stdout tick {i}", flush=True)
        time.sleep(seconds / ticks)
    pipes.report_asset_materialization(metadata={"ticks": ticks})
"""

REQUEUE = """\
import os, time
from dagster_pipes import open_dagster_pipes

execution = int(os.environ.get("SLURM_RESTART_COUNT", "0")) + 1
with open_dagster_pipes() as pipes:
    for i in range(3):
        print(f"execution {execution} line {i}", flush=True)
        pipes.log.info(f"execution {execution} message {i}")
    if execution == 1:
        time.sleep(300)  # requeued long before this ends
    pipes.report_asset_materialization(metadata={"execution": execution})
"""

BURSTS = """\
import sys, time
from dagster_pipes import open_dagster_pipes

block = ("x" * 1023 + "\\n") * 3072  # 3 MB of stdout per burst
with open_dagster_pipes() as pipes:
    for i in range(30):
        sys.stdout.write(block)
        sys.stdout.flush()
        pipes.log.info(f"burst {i}")
        time.sleep(0.3)
    pipes.report_asset_materialization(metadata={"bursts": 30})
"""

PARTIAL = """\
echo "working"
printf 'result: 42'
printf 'FATAL: disk quota exceeded' >&2
exit 1
"""

EXIT3 = """\
sleep 2
echo "bad input in row 7" >&2
exit 3
"""

HUGE_STDERR = """\
import sys
sys.stderr.write("E" * 10_000_000 + "\\n")
sys.exit(1)
"""

# name -> (workload file, launcher, args, extra YAML)
ASSETS = {
    "login_outage": ("ticker.py", "python", ["50", "10"], ""),
    "ctld_outage": ("ticker.py", "python", ["50", "10"], ""),
    "flaky_squeue": ("ticker.py", "python", ["12", "6"], ""),
    "dbd_down_exit3": ("exit3.sh", "bash", [], ""),
    "requeued": ("requeue.py", "python", [], "resources: {time: \"00:10:00\", extra_directives: [--requeue]}\n"),
    # Through the jump host: two SSH hops make an answer cut at the exit status likely (seen here).
    "bursts": ("bursts.py", "python", [], "cluster: docker-jump\n"),
    "partial_line": ("partial.sh", "bash", [], ""),
    "orphan": ("ticker.py", "python", ["12", "4"], ""),
    "give_up": ("ticker.py", "python", ["40", "8"], "submission: {outage_tolerance: \"00:00:15\"}\n"),
    "held": ("ticker.py", "python", ["5", "1"], "resources: {time: \"00:05:00\", extra_directives: [--begin=now+600]}\n"),
    "huge_stderr": ("huge_stderr.py", "python", [], ""),
}
WORKLOADS = {"ticker.py": TICKER, "requeue.py": REQUEUE, "bursts.py": BURSTS, "partial.sh": PARTIAL,
             "exit3.sh": EXIT3, "huge_stderr.py": HUGE_STDERR}


@pytest.fixture(scope="module")
def ui(slurm_cluster, tmp_path_factory):
    project = copy_project(tmp_path_factory.mktemp("field"))
    (project / "clusters" / "docker-jump.yaml").write_text(
        "extends: docker\ndescription: the test cluster through its jump host\nssh:\n  jump_hosts:\n    - {host: 127.0.0.1, port: 2223}\n")
    for name, code in WORKLOADS.items():
        (project / "workloads" / name).write_text(code)
    for name, (script, launcher, args, extra) in ASSETS.items():
        folder = project / "defs" / "field" / name
        folder.mkdir(parents=True)
        body = (f"type: components.SlurmAssetComponent\nattributes:\n  assets:\n    - key: field/{name}\n"
                f"  script: {script}\n  launcher: {launcher}\n  args: {args!r}\n")
        if "cluster:" not in extra:
            body += "  cluster: docker\n"
        if "resources:" not in extra:
            body += "  resources: {time: \"00:05:00\"}\n"
        body += textwrap.indent(extra, "  ")
        (folder / "defs.yaml").write_text(body)
    # Runs start at once instead of waiting for the daemon's next look at the queue (5-10 s a run).
    config = project / ".dagster" / "dagster.yaml"
    config.write_text(config.read_text() + "run_coordinator:\n  module: dagster.core.run_coordinator\n  class: DefaultRunCoordinator\n")
    server = DagsterUI(project)
    server.early = {}
    yield server
    server.stop()


def _sh(*args: str) -> str:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=120).stdout.strip()


def _job(run_id: str, states: str = "all") -> tuple[str, str] | None:
    """(job id, state) of the job whose directory belongs to this run, as root sees it."""
    for line in _sh("squeue", "-h", "-t", states, "-o", "%i|%T|%Z").splitlines():
        job_id, state, work_dir = line.split("|", 2)
        if f"/jobs/{run_id}/" in work_dir + "/":
            return job_id, state
    return None


def _wait_job(run_id: str, states: str = "RUNNING", timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = _job(run_id, states)
        if found:
            return found[0]
        time.sleep(0.2)
    raise AssertionError(f"no {states} job for run {run_id} within {timeout}s")


def _jobs_of(*run_ids: str) -> list[str]:
    """Every job sacct knows whose directory belongs to one of these runs (accounting keeps them all)."""
    out = _sh("sacct", "-X", "-n", "-P", "-a", "-S", "now-3hours", "-o", "JobID,WorkDir")
    return sorted({line.split("|")[0] for line in out.splitlines()
                   if any(f"/jobs/{run_id}/" in line.split("|", 1)[1] + "/" for run_id in run_ids)})


def _down(daemon: str) -> float:
    result = _cluster("stop", daemon, timeout=120)
    assert result.returncode == 0, result.stderr
    return time.time()


def _up(daemon: str) -> float:
    result = _cluster("start", daemon, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return time.time()


def _log_time(instance, run_id: str, needle: str) -> float | None:
    return next((e.timestamp for e in instance.all_logs(run_id) if needle in (e.user_message or "")), None)


def _ticks_delivered(logs: list[str], ticks: int) -> list[int]:
    return [i for i in range(ticks) if not any(m == f"tick {i}" for m in logs)]


def _survived(ui, run_id: str, asset: str, job_id: str, ticks: int = 10) -> tuple[float, float]:
    """The run succeeded with all its Pipes messages and one job; when loss and return were logged."""
    assert ui.wait(run_id, timeout=240) == "SUCCESS", failures(ui.instance(), run_id)
    instance = ui.instance()
    logs = run_logs(instance, run_id)
    assert materializations(instance, run_id)[f"field/{asset}"]["ticks"] == ticks
    assert _ticks_delivered(logs, ticks) == [], "Pipes messages lost"
    assert _jobs_of(run_id) == [job_id], "one job, never a second submission"
    lost, back = _log_time(instance, run_id, "lost contact with docker"), _log_time(instance, run_id, "restored after")
    assert lost and back, logs
    return lost, back


def test_login_node_gone_60s_is_waited_out_and_past_the_tolerance_gives_up_clearly(ui):
    # Two runs through one outage: the default tolerance (30 min) rides it out; 15 s gives up.
    run_id, short = ui.launch(["field/login_outage"]), ui.launch(["field/give_up"])
    job_id, short_job = _wait_job(run_id), _wait_job(short)
    time.sleep(3)
    stopped = _down("sshd-login")
    try:
        assert ui.wait(short, timeout=120) == "FAILURE"
        gave_up = time.time()
        text = failures(ui.instance(), short)
        assert f"gave up following Slurm job {short_job}" in text and "may still be running" in text, text
        assert "re-attaches" in text and f"scancel {short_job}" in text
        assert _job(short)[1] in ("RUNNING", "COMPLETED", "COMPLETING"), "nothing was cancelled"
        time.sleep(max(0.0, stopped + 60 - time.time()))
    finally:
        started = _up("sshd-login")
    lost, back = _survived(ui, run_id, "login_outage", job_id)
    print(f"\nsshd-login down 60 s: loss logged {lost - stopped:.1f}s after the stop, return {back - started:.1f}s after the start;"
          f" with a 15 s tolerance the step gave up {gave_up - stopped:.1f}s after the stop")
    # Later, re-executing the run that gave up harvests its job, which finished meanwhile.
    rerun = ui.reexecute(short)
    assert ui.wait(rerun, timeout=180) == "SUCCESS", failures(ui.instance(), rerun)
    instance = ui.instance()
    assert materializations(instance, rerun)["field/give_up"]["ticks"] == 8
    assert _ticks_delivered(run_logs(instance, rerun), 8) == []
    assert _jobs_of(short, rerun) == [short_job]


# Runs launched while the controller is down: their sbatch gets no answer. The tests named after
# them check their results later (and launch them themselves when run alone).
LAUNCHED_IN_OUTAGE = ("bursts", "partial_line", "huge_stderr")


def _launched(ui, name: str) -> str:
    return ui.early.pop(name, None) or ui.launch([f"field/{name}"])


def test_controller_down_60s_is_waited_out_by_running_and_new_jobs(ui):
    run_id = ui.launch(["field/ctld_outage"])
    job_id = _wait_job(run_id)
    time.sleep(3)
    stopped = _down("slurmctld")
    try:
        ui.early = {name: ui.launch([f"field/{name}"]) for name in LAUNCHED_IN_OUTAGE}
        time.sleep(60)
    finally:
        started = _up("slurmctld")
    lost, back = _survived(ui, run_id, "ctld_outage", job_id)
    print(f"\nslurmctld down 60 s: loss logged {lost - stopped:.1f}s after the stop, return {back - started:.1f}s after the start")
    unanswered = 0
    for name, early in ui.early.items():
        ui.wait(early, timeout=240)
        assert len(_jobs_of(early)) == 1, f"{name}: sbatch without an answer must not lead to a second job"
        unanswered += any("no answer from sbatch" in m for m in run_logs(ui.instance(), early))
    assert unanswered, "no submission met the outage"


def test_flaky_squeue_does_not_fail_a_running_job(ui):
    _cluster("flaky-squeue", "on")
    try:
        run_id = ui.launch(["field/flaky_squeue"])
        status = ui.wait(run_id, timeout=180)
    finally:
        _cluster("flaky-squeue", "off")
    instance = ui.instance()
    assert status == "SUCCESS", failures(instance, run_id)
    assert _ticks_delivered(run_logs(instance, run_id), 6) == []
    assert len(_jobs_of(run_id)) == 1


def test_exit_code_without_accounting_is_failed_with_its_code(ui):
    _down("slurmdbd")
    try:
        run_id = ui.launch(["field/dbd_down_exit3"])
        assert ui.wait(run_id, timeout=180) == "FAILURE"
    finally:
        _up("slurmdbd")
    instance = ui.instance()
    text = failures(instance, run_id)
    assert "ended FAILED (exit code 3)" in text and "bad input in row 7" in text, text
    meta = failure_metadata(instance, run_id)
    assert (meta["slurm_state"], meta["exit_code"]) == ("FAILED", 3)


def test_requeued_job_keeps_every_line_of_both_executions(ui):
    run_id = ui.launch(["field/requeued"])
    job_id = _wait_job(run_id)
    deadline = time.monotonic() + 60
    while "execution 1 line 2" not in _sh("bash", "-c", f"cat /home/*/dagster-hpc/jobs/{run_id}/*/slurm-{job_id}.out"):
        assert time.monotonic() < deadline, "the first execution printed nothing"
        time.sleep(0.3)
    time.sleep(1.5)  # let the follower read the first execution's lines before the requeue
    subprocess.run(["scontrol", "requeue", job_id], check=True)
    _wait_job(run_id, "PENDING", timeout=60)
    # Slurm delays a requeued job's start (BeginTime); an administrator may let it start at once.
    subprocess.run(["scontrol", "update", f"jobid={job_id}", "StartTime=now"], check=True)
    assert ui.wait(run_id, timeout=240) == "SUCCESS", failures(ui.instance(), run_id)
    instance = ui.instance()
    meta = materializations(instance, run_id)["field/requeued"]
    assert (meta["execution"], meta["slurm_restarts"]) == (2, 1)
    logs = run_logs(instance, run_id)
    assert any(f"job {job_id} was requeued (restart 1)" in m for m in logs), logs
    for execution in (1, 2):
        assert all(any(m == f"execution {execution} message {i}" for m in logs) for i in range(3)), logs
    output = captured_output(ui.home, run_id)
    for execution in (1, 2):
        for i in range(3):
            assert f"execution {execution} line {i}" in output, (execution, i)
    assert f"[hpc] job {job_id} requeued: execution 2 starts on" in output
    stdout = captured_output(ui.home, run_id, (".out",))
    assert stdout.index("execution 1 line 0") < stdout.index("requeued: execution 2") < stdout.index("execution 2 line 0")
    assert _jobs_of(run_id) == [job_id]


def test_multi_megabyte_bursts_lose_no_pipes_message(ui):
    run_id = _launched(ui, "bursts")
    assert ui.wait(run_id, timeout=300) == "SUCCESS", failures(ui.instance(), run_id)
    logs = run_logs(ui.instance(), run_id)
    missing = [i for i in range(30) if f"burst {i}" not in logs]
    assert missing == [], f"Pipes messages lost: {missing}"
    assert materializations(ui.instance(), run_id)["field/bursts"]["bursts"] == 30


def test_last_line_without_newline_is_delivered(ui):
    run_id = _launched(ui, "partial_line")
    assert ui.wait(run_id, timeout=120) == "FAILURE"
    text = failures(ui.instance(), run_id)
    assert "\nFATAL: disk quota exceeded\n" in text, text
    assert "result: 42" in captured_output(ui.home, run_id)


def test_killed_orchestrator_then_reexecution_harvests_the_finished_job(ui):
    run_id = ui.launch(["field/orphan"])
    job_id = _wait_job(run_id)
    assert ui.kill_run_processes(run_id) >= 1
    instance = ui.instance()
    # What run monitoring does for a run whose worker died.
    instance.report_run_failed(instance.get_run_by_id(run_id))
    deadline = time.monotonic() + 90
    while _job(run_id, "PD,R,CG"):
        assert time.monotonic() < deadline, "the job did not finish"
        time.sleep(0.5)
    rerun = ui.reexecute(run_id)
    assert ui.wait(rerun, timeout=180) == "SUCCESS", failures(ui.instance(), rerun)
    instance = ui.instance()
    assert materializations(instance, rerun)["field/orphan"]["ticks"] == 4
    assert materializations(instance, rerun)["field/orphan"]["slurm_job_id"] == job_id
    # The script of a job this step did not submit is read back from its job directory.
    assert "#SBATCH" in materializations(instance, rerun)["field/orphan"]["job_script"]
    logs = run_logs(instance, rerun)
    assert any(f"re-attaching to Slurm job {job_id}" in m for m in logs)
    assert not any("submitted Slurm job" in m for m in logs)
    assert _ticks_delivered(logs, 4) == []
    assert _jobs_of(run_id, rerun) == [job_id], "sacct shows one job"


def test_pending_reason_that_never_clears_fails_fast(ui):
    run_id = ui.launch(["field/held"])
    job_id = _wait_job(run_id, "PENDING")
    subprocess.run(["scontrol", "hold", job_id], check=True)  # as root: an administrator's hold
    held = time.monotonic()
    assert ui.wait(run_id, timeout=120) == "FAILURE"
    waited = time.monotonic() - held
    text = failures(ui.instance(), run_id)
    assert "can never start" in text and "JobHeldAdmin" in text and "fix:" in text, text
    assert _job(run_id)[1] == "CANCELLED"
    assert waited < 30, f"took {waited:.0f}s"
    print(f"\nadministrator hold: step failed and job cancelled {waited:.1f}s after the hold")


def test_huge_stderr_line_is_cut_in_the_failure(ui):
    run_id = _launched(ui, "huge_stderr")
    assert ui.wait(run_id, timeout=120) == "FAILURE"
    instance = ui.instance()
    text = failures(instance, run_id)
    assert "ended FAILED (exit code 1)" in text and "cut]" in text
    assert len(text) < 50_000, len(text)
    assert len(failure_metadata(instance, run_id)["stderr_tail"]) < 50_000


def test_no_job_is_left_behind(ui):
    """Every run of this module is over: the queue holds none of its jobs."""
    leftovers = [line for line in _sh("squeue", "-h", "-t", "PD,R,CG,S", "-o", "%i|%Z").splitlines()
                 if str(ui.project.parent) in line or "/jobs/" in line]
    assert leftovers == []
