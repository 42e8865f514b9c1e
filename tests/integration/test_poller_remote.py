"""SharedPoller on the real test cluster: step-like processes follow their own jobs through one shared
squeue, and a stopped slurmctld is the same "no news" for all of them, then recovers."""

from __future__ import annotations

import multiprocessing
import re
import subprocess
import time
from pathlib import Path

import pytest

from components.core.poller import SharedPoller
from components.core.scheduler import ACTIVE, SchedulerUnavailable, SlurmClient
from tests.conftest import ROOT
from tests.integration.conftest import _cluster, ssh_as_user

pytestmark = pytest.mark.integration

# remote.py's adaptive interval, capped at 1 s to keep the test short.
SCHEDULE_S = (0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0)


def _client() -> SlurmClient:
    from components.core.profiles import load_profile
    from components.core.ssh_target import target_for
    from components.core.transports import transport_for

    return SlurmClient(transport_for(target_for(load_profile("docker", ROOT / "clusters"))))


def _submit(cluster: Path, wrap: str) -> str:
    return ssh_as_user(cluster, f"sbatch --parsable --wrap '{wrap}'").strip().split(";")[0]


def _job_info_rpcs() -> int:
    """squeue's RPCs so far (all users; other tests' too): one REQUEST_JOB_INFO_SINGLE (one id) or
    REQUEST_JOB_USER_INFO (several ids with --me) per squeue run; -1 without sdiag."""
    try:
        text = subprocess.run(["sdiag"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return -1
    return sum(int(n) for n in re.findall(r"REQUEST_JOB_(?:INFO|INFO_SINGLE|USER_INFO)\s+\(\s*\d+\)\s+count:(\d+)", text))


def _follow(state_dir: str | None, inbox, ready, results) -> None:
    """One step process: poll the job as remote.py does until it ends, then fetch its sacct record."""
    job = "?"
    try:
        client = _client()
        poller = SharedPoller(client, Path(state_dir)) if state_dir else None
        ready.put(True)
        job = inbox.get(timeout=120)
        started, polls, state, calls = time.monotonic(), 0, None, 0
        while True:
            interval = SCHEDULE_S[min(polls, len(SCHEDULE_S) - 1)]
            try:
                if poller:
                    state = poller.queue_state(job, max_age_s=interval)
                else:
                    calls += 1
                    state = client.queue_state(job)
            except SchedulerUnavailable:
                # Other tests stop slurmctld now and then: no news, wait as remote.py does.
                time.sleep(interval)
                continue
            if state is None or state.state not in ACTIVE:
                break
            time.sleep(interval)
            polls += 1
        elapsed = time.monotonic() - started
        record = poller.accounting(job) if poller else client.accounting(job)
        if poller:
            poller.forget(job)
        squeue_calls = poller.squeue_calls if poller else calls
        results.put((job, state and state.state, record and record.state, polls + 1, squeue_calls, elapsed))
    except Exception as exc:  # the parent reports it; a silent child would only time out
        results.put((job, f"error: {exc!r}", None, 0, 0, 0.0))


def _run_followers(cluster: Path, state_dir: Path | None) -> tuple[dict, dict]:
    wraps = ["sleep 4", "sleep 5", "sleep 6", "sleep 7", "sleep 8", "sleep 5; exit 3"]
    ctx = multiprocessing.get_context("spawn")  # as Dagster's multiprocess executor starts steps
    ready, results = ctx.Queue(), ctx.Queue()
    inboxes = [ctx.Queue() for _ in wraps]
    procs = [ctx.Process(target=_follow, args=(str(state_dir) if state_dir else None, inbox, ready, results))
             for inbox in inboxes]
    for proc in procs:
        proc.start()
    for _ in procs:  # spawned interpreters import for seconds on a busy machine: submit once all are up
        ready.get(timeout=120)
    rpcs_before, wall = _job_info_rpcs(), time.monotonic()
    jobs = []
    for inbox, wrap in zip(inboxes, wraps):
        jobs.append(_submit(cluster, wrap))
        inbox.put(jobs[-1])
    rows = {row[0]: row for row in (results.get(timeout=120) for _ in procs)}
    wall = time.monotonic() - wall
    rpcs = _job_info_rpcs() - rpcs_before
    for proc in procs:
        proc.join(timeout=30)
    expected = {job: ("FAILED" if "exit 3" in wrap else "COMPLETED") for job, wrap in zip(jobs, wraps)}
    totals = {"squeue": sum(row[4] for row in rows.values()), "questions": sum(row[3] for row in rows.values()),
              "sdiag_job_info": rpcs, "wall_s": round(wall, 1)}
    return {job: rows[job][1:3] for job in jobs}, {"expected": expected, **totals}


def test_batched_queries_match_real_squeue_and_sacct(slurm_cluster):
    client = _client()
    job = _submit(slurm_cluster, "sleep 1")
    # Seen on 22.05: several ids with unknown ones exit 0; one unknown id alone exits 1 ("Invalid job id").
    assert set(client.queue_states([job, "999999"])) == {job}
    assert client.queue_states(["999999"]) == {}
    assert client.queue_states(["999999", "999998"]) == {}
    deadline = time.monotonic() + 60
    while client.queue_states([job])[job].state in ACTIVE and time.monotonic() < deadline:
        time.sleep(0.2)
    records = {}
    while job not in records and time.monotonic() < deadline:
        records = {k: v for k, v in client.accountings([job, "999999"]).items() if v.state not in ACTIVE}
        time.sleep(0.5)
    assert list(records) == [job] and records[job].state == "COMPLETED"


def test_processes_share_one_squeue(slurm_cluster, tmp_path):
    seen, shared = _run_followers(slurm_cluster, tmp_path / "poll")
    assert seen == {job: (want, want) for job, want in shared["expected"].items()}, seen
    _, alone = _run_followers(slurm_cluster, None)
    print(f"\nshared: {shared}\nalone:  {alone}")
    # Alone, every question is a squeue. Shared: about one per interval (0.1 s at first, 1 s after 1.5 s)
    # plus one per newly registered job; with 6 processes that is well under half the questions.
    assert alone["squeue"] == alone["questions"]
    assert shared["squeue"] <= 0.4 * shared["questions"], shared
    assert shared["squeue"] <= shared["wall_s"] / 1.0 + 12, shared
    if shared["sdiag_job_info"] >= 0:
        # sdiag counts every user's squeue on this controller: a lower bound check only.
        assert shared["sdiag_job_info"] >= shared["squeue"]


def _ask(state_dir: str, job: str, ready, go, results) -> None:
    poller = SharedPoller(_client(), Path(state_dir))
    ready.put(True)
    go.wait(120)
    try:
        outcome = poller.queue_state(job, max_age_s=1.0).state
    except SchedulerUnavailable as exc:
        outcome = f"unavailable: {exc}"
    results.put((job, outcome, poller.squeue_calls))


def _askers(state_dir: Path, jobs: list[str]):
    """One process per job, imported and waiting; calling the result makes them all ask at once."""
    ctx = multiprocessing.get_context("spawn")
    ready, go, results = ctx.Queue(), ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_ask, args=(str(state_dir), job, ready, go, results)) for job in jobs]
    for proc in procs:
        proc.start()
    for _ in procs:
        ready.get(timeout=120)

    def ask() -> list[tuple]:
        go.set()
        rows = [results.get(timeout=120) for _ in procs]
        for proc in procs:
            proc.join(timeout=30)
        return rows
    return ask


def test_a_stopped_controller_is_no_news_for_all_then_recovers(slurm_cluster, tmp_path):
    jobs = [_submit(slurm_cluster, "sleep 120") for _ in range(4)]
    poller = SharedPoller(_client(), tmp_path / "poll")
    for job in jobs:
        poller.queue_state(job, 0)
    ask = _askers(tmp_path / "poll", jobs)
    # Stopped only now, for as short as can be: other test sessions' `test-cluster.sh up` restarts it.
    _cluster("stop", "slurmctld")
    try:
        down = ask()
    finally:
        _cluster("start", "slurmctld")
    try:
        assert all(outcome.startswith("unavailable: ") and "slurm controller" in outcome for _, outcome, _ in down), down
        # squeue to a dead controller takes 10-20 s here: the others take the holder's failure.
        assert sum(calls for *_, calls in down) == 1, down
        ask = _askers(tmp_path / "poll", jobs)
        time.sleep(2.5)  # the failure is held 2 s
        up = ask()
        assert all(outcome in ("RUNNING", "PENDING") for _, outcome, _ in up), up
        assert sum(calls for *_, calls in up) == 1, up
    finally:
        ssh_as_user(slurm_cluster, "scancel " + " ".join(jobs), check=False)
