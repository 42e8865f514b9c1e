"""Run-scoped allocations, the pure part, and the allocation's dispatcher script run for real by bash
(outside Slurm: the steps here are plain scripts, so its timers, requests and releases are exercised)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import pytest

from components.core import allocation as A
from components.core.job_record import SubmittedJob
from components.core.profiles import load_profile
from components.core.render import JobSpec, Runtime, plan_job
from components.core.resources import JobResources
from tests.conftest import ROOT

CLUSTERS = ROOT / "clusters"


def _plan(profile="docker", launcher="python", **resources):
    spec = JobSpec("step", ("x",), Path("w.py"), launcher=launcher, resources=JobResources(**resources))
    return plan_job(load_profile(profile, CLUSTERS), spec)


def _need(op="a", **resources):
    return A.need_of(_plan(**{"time": "00:10:00", **resources}), op)


def test_need_of_reads_resources_and_placement():
    need = _need(cpus_per_task=2, ntasks=2, nodes=1, mem="1G")
    assert (need.nodes, need.tasks, need.cpus_per_node, need.mem_mb, need.time_s) == (1, 2, 4, 1024, 600)
    assert (need.partition, need.qos) == ("cpu", "normal")
    assert A.StepNeed.from_json(need.to_json()) == need
    assert A.StepNeed.from_json("{not json") is None


@pytest.mark.parametrize(("resources", "why"), [
    ({"launcher": "ray"}, "launcher ray"),
    ({"exclusive": True}, "whole nodes"),
    ({"extra_directives": ("--constraint=a100",)}, "extra_directives"),
])
def test_steps_that_must_run_alone_say_why(resources, why):
    launcher = resources.pop("launcher", "python")
    need = A.need_of(_plan(launcher=launcher, time="00:10:00", **resources), "a")
    assert why in need.why_not


def test_size_holds_steps_side_by_side_up_to_a_node():
    a, b, c = _need("a", cpus_per_task=1), _need("b", cpus_per_task=1), _need("c", cpus_per_task=1)
    shape = A.size(a, [b, c], per_core_mb=2048, max_time_s=3600, node_cpus=2, node_mem_mb=4096)
    # Three 1-core steps on 2-core nodes: two side by side; memory is their cores' share; times add up.
    assert (shape.nodes, shape.cpus_per_node, shape.mem_mb, shape.time_s) == (1, 2, 4096, 1800)
    assert shape.steps == ("a", "b", "c")
    # Capped at the partition's limit.
    assert A.size(a, [b, c], 2048, 900, node_cpus=2, node_mem_mb=4096).time_s == 900


def test_size_leaves_out_steps_elsewhere_and_explicit_shape_wins():
    a = _need("a", cpus_per_task=1)
    debug = _need("d", partition_class="debug")
    ray = A.need_of(_plan(launcher="ray", time="00:10:00"), "r")
    shape = A.size(a, [debug, ray], 2048, None, node_cpus=2, node_mem_mb=4096)
    assert shape.steps == ("a",)
    explicit = JobResources(cpus_per_task=2, mem="3G", time="02:00:00")
    shape = A.size(a, [], 2048, None, explicit, node_cpus=2, node_mem_mb=4096)
    assert (shape.cpus_per_node, shape.mem_mb, shape.time_s) == (2, 3072, 7200)


def test_fits_names_the_reason():
    a = _need("a", cpus_per_task=1)
    shape = A.size(a, [], 2048, None, node_cpus=2, node_mem_mb=4096)
    assert A.fits(a, shape, 2048) is None
    assert "needs 2 core(s) per node" not in (A.fits(_need("b", cpus_per_task=1), shape, 2048) or "")
    assert A.fits(_need("b", cpus_per_task=2), shape, 2048) == "it needs 2 cores per node, the allocation holds 1"
    assert "partition debug" in A.fits(_need("d", partition_class="debug"), shape, 2048)
    assert A.fits(_need("m", mem="3G"), shape, 2048) == "it needs 3G per node, the allocation holds 2G"
    assert "has 00:01:00 left" in A.fits(a, shape, 2048, remaining_s=60)


def test_srun_prefix_is_the_steps_own_request():
    profile = load_profile("docker", CLUSTERS)
    need = _need("a", cpus_per_task=2, mem="1G", gpus=0)
    prefix = str(A.srun_prefix(profile, need, A.step_name("a; rm -rf ~", 1), 2048))
    assert prefix.startswith("srun --job-name=")
    assert ";" not in prefix and "~" not in prefix.split()[1]
    assert "--cpus-per-task=2 --exact --mem=1G --time=00:10:00" in prefix
    # Without a memory request the step gets its cores' share, so steps never take the whole allocation's memory.
    assert "--mem=2G" in str(A.srun_prefix(profile, _need("b", cpus_per_task=1), "b.1", 2048))
    plan = plan_job(profile, JobSpec("a", ("a",), Path("w.py"), resources=JobResources(ntasks=2)),
                    runtime=Runtime(step_srun=A.srun_prefix(profile, need, "a.1", 2048)))
    assert str(plan.launch).startswith("srun --job-name=a.1 ") and str(plan.launch).count("srun") == 1


def test_records_round_trip_through_run_tags():
    shape = A.AllocationShape(1, 2, 4096, 0, 600, "cpu", "normal", "acct", ("a", "b"))
    record = A.AllocationRecord("docker", "123", "/scratch/jobs/r/allocation-1", shape)
    assert A.AllocationRecord.from_tag(record.tag()) == record
    assert A.AllocationRecord.from_tag("garbage") is None
    step = SubmittedJob("docker", "123", "/scratch/jobs/r/a-1", step="a.1", alloc_dir="/scratch/jobs/r/allocation-1")
    assert SubmittedJob.from_tag(step.tag()) == step
    plain = SubmittedJob("docker", "124", "/scratch/jobs/r/b-1")
    assert SubmittedJob.from_tag(plain.tag()) == plain and plain.tag() == "docker|124|/scratch/jobs/r/b-1"
    assert step.describe() == "job step a.1 of allocation 123"


def test_allocation_script_traces_directives_to_the_steps():
    profile = load_profile("docker", CLUSTERS)
    shape = A.size(_need("a"), [_need("b")], 2048, None, node_cpus=2, node_mem_mb=4096)
    script = A.render_allocation(A.allocation_plan(profile, shape, "alloc-1234"), CLUSTERS, idle_timeout_s=120, abandon_s=1800)
    assert "#SBATCH --cpus-per-task=2" in script and "#SBATCH --account=" in script
    assert "--cpus-per-task=2 <- allocation sized for steps a, b" in script
    assert "steps=(a b )" in script and "idle_timeout_s=120" in script and "abandon_s=1800" in script
    subprocess.run(["bash", "-n"], input=script, text=True, check=True)


def _alive(pid: int) -> bool:
    """Running, not a zombie left for an init that does not reap (as in containers)."""
    try:
        return "\nState:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False


# --- the dispatcher, run by bash --------------------------------------------------------------

class Dispatcher:
    """allocation.sh started in a directory as Slurm would start it (SLURM_JOB_ID set), without Slurm."""

    def __init__(self, root: Path, steps=("a", "b"), idle_timeout_s=30, abandon_s=60, env=None):
        profile = load_profile("docker", CLUSTERS)
        shape = A.AllocationShape(1, 2, 4096, 0, 600, "cpu", "normal", "acct", tuple(steps))
        script = A.render_allocation(A.allocation_plan(profile, shape, "alloc-t"), CLUSTERS,
                                     idle_timeout_s=idle_timeout_s, abandon_s=abandon_s)
        self.dir = root / "allocation"
        for sub in ("requests", "started", "finished"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        (self.dir / "heartbeat").touch()
        (self.dir / "allocation.sh").write_text(script)
        self.out = open(self.dir / "slurm-99.out", "w")  # noqa: SIM115 - closed in wait()
        self.proc = subprocess.Popen(["bash", "allocation.sh"], cwd=self.dir, stdout=self.out, stderr=subprocess.STDOUT,
                                     env={**os.environ, "SLURM_JOB_ID": "99", **(env or {})}, start_new_session=True)

    def request(self, name: str, body: str) -> Path:
        step_dir = self.dir.parent / name
        step_dir.mkdir()
        (step_dir / "job.sh").write_text(body)
        (self.dir / "requests" / name).write_text(str(step_dir))
        return step_dir

    def wait(self, timeout: float) -> str:
        try:
            self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            self.out.close()
        return (self.dir / "slurm-99.out").read_text()

    def finished(self, name: str) -> str | None:
        path = self.dir / "finished" / name
        return path.read_text().strip() if path.exists() else None


def test_dispatcher_runs_each_request_once_and_releases_when_every_step_ran(tmp_path):
    d = Dispatcher(tmp_path, steps=("a", "b"))
    a = d.request("a.1", "echo out-a; echo err-a >&2; exit 0\n")
    b = d.request("b.1", "sleep 1; exit 3\n")
    started = time.monotonic()
    log = d.wait(timeout=20)
    assert d.proc.returncode == 0, log
    assert time.monotonic() - started < 10, log
    assert "every step of the run has run here: releasing" in log
    assert (d.finished("a.1"), d.finished("b.1")) == ("0", "3")
    assert (a / "slurm-99.out").read_text() == "out-a\n" and (a / "slurm-99.err").read_text() == "err-a\n"
    assert log.count("step a.1 started") == 1 and (b / "slurm-99.out").exists()
    assert not list((d.dir / "requests").iterdir())


def test_dispatcher_ends_idle_without_heartbeat_and_stays_while_it_beats(tmp_path):
    d = Dispatcher(tmp_path, steps=("a",), idle_timeout_s=3)
    deadline = time.monotonic() + 7
    while time.monotonic() < deadline:  # the orchestrator follows its steps: the heartbeat is fresh
        (d.dir / "heartbeat").touch()
        assert d.proc.poll() is None, (d.dir / "slurm-99.out").read_text()
        time.sleep(0.5)
    stopped = time.monotonic()
    log = d.wait(timeout=15)
    assert "idle, and no heartbeat" in log
    assert 2 < time.monotonic() - stopped < 8


def test_dispatcher_stops_running_steps_when_the_orchestrator_is_gone(tmp_path):
    d = Dispatcher(tmp_path, steps=("a",), idle_timeout_s=2, abandon_s=4)
    step = d.request("a.1", "sleep 300 & echo $! > sleeper.pid; wait\n")
    log = d.wait(timeout=20)
    assert "the orchestrator is gone; stopping 1 step(s)" in log
    assert d.finished("a.1") == "143"
    pid = int((step / "sleeper.pid").read_text())
    time.sleep(0.5)
    assert not _alive(pid), "the step's own child survived: only its shell was stopped"


def test_dispatcher_starts_nothing_for_a_silent_orchestrator_and_honours_release(tmp_path):
    d = Dispatcher(tmp_path, steps=("a", "b"), idle_timeout_s=2, abandon_s=60)
    os.utime(d.dir / "heartbeat", (time.time() - 10, time.time() - 10))
    d.request("a.1", "touch ran\n")
    log = d.wait(timeout=15)
    assert not (tmp_path / "a.1" / "ran").exists() and "idle, and no heartbeat" in log
    d = Dispatcher(tmp_path / "second", steps=("a",))
    (d.dir / "release").touch()
    assert "released by the orchestrator" in d.wait(timeout=10)


def test_requeued_allocation_runs_unfinished_steps_again(tmp_path):
    d0 = Dispatcher(tmp_path, steps=("a", "b"))
    os.killpg(d0.proc.pid, signal.SIGKILL)
    d0.wait(timeout=5)
    # The first execution had started a.1 (never finished) and finished b.1.
    step = d0.request("a.1", "echo again >> runs\n")
    (d0.dir / "requests" / "a.1").rename(d0.dir / "started" / "a.1")
    (d0.dir / "started" / "b.1").write_text(str(tmp_path / "b.1"))
    (d0.dir / "finished" / "b.1").write_text("0")
    d = Dispatcher(tmp_path, steps=("a", "b"), env={"SLURM_RESTART_COUNT": "1"})
    log = d.wait(timeout=15)
    assert "allocation requeued: step a.1 starts again" in log and "b.1 starts again" not in log
    assert (step / "runs").read_text() == "again\n" and d.finished("a.1") == "0"


def test_a_step_request_appears_whole_in_requests_where_the_dispatcher_starts_whatever_it_finds(tmp_path):
    # The dispatcher (allocation.sbatch.j2) starts every file in requests/. Real bash runs the request
    # command; a `mv` in front of the real one records what requests/ holds at the moment before the
    # rename, the window in which the dispatcher once took NAME.part for a step.
    import os
    import subprocess

    from components.core.alloc_run import request_command

    alloc = tmp_path / "allocation"
    for folder in ("requests", "started", "finished"):
        (alloc / folder).mkdir(parents=True)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    seen = tmp_path / "seen"
    (bin_dir / "mv").write_text(f"#!/bin/bash\nls -A {alloc}/requests > {seen}\nexec /bin/mv \"$@\"\n")
    (bin_dir / "mv").chmod(0o755)
    command = request_command(str(alloc), "/jobs/run/step one", "ensemble__member_1.1")
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    subprocess.run(["bash", "-c", command], check=True, env=env)
    assert seen.read_text() == ""  # nothing but whole requests ever sits in requests/
    assert sorted(p.name for p in (alloc / "requests").iterdir()) == ["ensemble__member_1.1"]
    assert (alloc / "requests" / "ensemble__member_1.1").read_text() == "/jobs/run/step one"
    subprocess.run(["bash", "-c", command], check=True, env=env)  # a retry asks nothing twice
    (alloc / "requests" / "ensemble__member_1.1").rename(alloc / "started" / "ensemble__member_1.1")
    subprocess.run(["bash", "-c", command], check=True, env=env)
    assert list((alloc / "requests").iterdir()) == []
