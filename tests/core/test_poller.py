"""SharedPoller's cache and lock logic. The scheduler side is a stand-in here only to count, slow down
or fail its queries at will; tests/integration/test_poller_remote.py runs the poller on real Slurm."""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from pathlib import Path

import pytest

from components.core.errors import ConfigError
from components.core.poller import SharedPoller
from components.core.scheduler import QueueState, SchedulerUnavailable, SlurmClient
from components.core.ssh_target import ContactLost


class CountingClient:
    """Answers every known id RUNNING; appends each query's ids to a file (shared across processes)."""

    def __init__(self, log: Path, delay_s: float = 0.0, error: Exception | None = None, known=None):
        self.log, self.delay_s, self.error, self.known = log, delay_s, error, known

    def queue_states(self, ids):
        with open(self.log, "a") as out:
            out.write(",".join(ids) + "\n")
        time.sleep(self.delay_s)
        if self.error:
            raise self.error
        return {i: QueueState("RUNNING", "None", "n1") for i in ids if self.known is None or i in self.known}

    def queries(self) -> list[list[str]]:
        return [line.split(",") for line in self.log.read_text().splitlines()] if self.log.exists() else []


@pytest.fixture
def client(tmp_path):
    return CountingClient(tmp_path / "queries.log")


def test_state_dir_is_created_private(tmp_path):
    SharedPoller(CountingClient(tmp_path / "q"), tmp_path / "a" / "poll")
    assert (tmp_path / "a" / "poll").stat().st_mode & 0o777 == 0o700


def test_state_dir_open_to_others_is_refused(tmp_path):
    (tmp_path / "poll").mkdir(mode=0o770)
    os.chmod(tmp_path / "poll", 0o770)
    with pytest.raises(ConfigError, match=r"not private to you.*mode 7"):
        SharedPoller(CountingClient(tmp_path / "q"), tmp_path / "poll")


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a directory to another user")
def test_state_dir_of_another_user_is_refused(tmp_path):
    (tmp_path / "poll").mkdir(mode=0o700)
    os.chown(tmp_path / "poll", 65534, 65534)
    with pytest.raises(ConfigError, match="owner uid 65534"):
        SharedPoller(CountingClient(tmp_path / "q"), tmp_path / "poll")


def test_state_dir_symlink_is_refused(tmp_path):
    (tmp_path / "real").mkdir(mode=0o700)
    (tmp_path / "poll").symlink_to(tmp_path / "real")
    with pytest.raises(ConfigError, match="not a directory"):
        SharedPoller(CountingClient(tmp_path / "q"), tmp_path / "poll")


def test_fresh_answers_come_from_the_cache(tmp_path, client):
    poller = SharedPoller(client, tmp_path / "poll")
    assert poller.queue_state("11", max_age_s=60) == QueueState("RUNNING", "None", "n1")
    assert poller.queue_state("11", max_age_s=60).state == "RUNNING"
    assert (poller.questions, poller.squeue_calls, len(client.queries())) == (2, 1, 1)
    time.sleep(0.15)
    poller.queue_state("11", max_age_s=0.1)
    assert poller.squeue_calls == 2


def test_one_query_asks_for_every_registered_job(tmp_path, client):
    first, second = SharedPoller(client, tmp_path / "poll"), SharedPoller(client, tmp_path / "poll")
    first.queue_state("11", 60)
    # A job the cache was not asked about is a miss, however young the cache.
    second.queue_state("12", 60)
    assert client.queries() == [["11"], ["11", "12"]]
    # ... and now the cache covers both.
    first.queue_state("11", 60)
    second.queue_state("12", 60)
    assert len(client.queries()) == 2


def test_unknown_job_is_none(tmp_path):
    client = CountingClient(tmp_path / "q", known={"11"})
    poller = SharedPoller(client, tmp_path / "poll")
    poller.queue_state("11", 60)
    assert poller.queue_state("12", 60) is None


def test_forgotten_and_abandoned_jobs_are_no_longer_asked_about(tmp_path, client):
    poller = SharedPoller(client, tmp_path / "poll", registration_ttl_s=300)
    for job in ("11", "12", "13"):
        poller.queue_state(job, 0)
    poller.forget("12")
    # 13's process died 10 minutes ago: nobody refreshed its registration.
    old = time.time() - 600
    os.utime(tmp_path / "poll" / "jobs" / "13", (old, old))
    poller.queue_state("11", 0)
    assert client.queries()[-1] == ["11"]
    assert sorted(os.listdir(tmp_path / "poll" / "jobs")) == ["11"]


def test_a_failed_query_is_held_briefly_then_retried(tmp_path):
    client = CountingClient(tmp_path / "q", error=SchedulerUnavailable("Unable to contact slurm controller"))
    poller = SharedPoller(client, tmp_path / "poll", error_hold_s=0.3)
    with pytest.raises(SchedulerUnavailable, match="Unable to contact"):
        poller.queue_state("11", 0)
    with pytest.raises(SchedulerUnavailable, match="shared query"):
        poller.queue_state("11", 0)
    assert len(client.queries()) == 1
    time.sleep(0.35)
    client.error = None
    assert poller.queue_state("11", 0).state == "RUNNING"
    assert len(client.queries()) == 2


def test_lost_contact_keeps_its_kind(tmp_path):
    client = CountingClient(tmp_path / "q", error=ContactLost("lost the SSH session to 127.0.0.1"))
    poller = SharedPoller(client, tmp_path / "poll")
    for _ in range(2):
        with pytest.raises(ContactLost, match="127.0.0.1"):
            poller.queue_state("11", 0)


def test_broken_or_future_cache_is_stale(tmp_path, client):
    poller = SharedPoller(client, tmp_path / "poll")
    poller.queue_state("11", 60)
    (tmp_path / "poll" / "queue.json").write_text("{not json")
    poller.queue_state("11", 60)
    cache = json.loads((tmp_path / "poll" / "queue.json").read_text())
    cache["time"] = time.time() + 3600  # a clock that was set back since
    (tmp_path / "poll" / "queue.json").write_text(json.dumps(cache))
    poller.queue_state("11", 60)
    assert len(client.queries()) == 3


@pytest.mark.parametrize("bad", ["12;reboot", "../x", "12 13", "", "12_x", "١٢"])
def test_malformed_ids_are_refused(tmp_path, client, bad):
    poller = SharedPoller(client, tmp_path / "poll")
    with pytest.raises(ValueError, match="not a Slurm job id"):
        poller.queue_state(bad, 60)
    assert client.queries() == []


def test_a_transport_is_wrapped_in_a_client(tmp_path):
    assert isinstance(SharedPoller(object(), tmp_path / "poll").client, SlurmClient)


def _follow(state_dir: str, log: str, job: str, go, results) -> None:
    poller = SharedPoller(CountingClient(Path(log), delay_s=0.3), Path(state_dir))
    go.wait(30)
    answers = [poller.queue_state(job, max_age_s=1.0).state for _ in range(3)]
    results.put((job, answers, poller.squeue_calls))


def test_processes_waiting_on_the_lock_take_the_holders_answer(tmp_path):
    # 6 processes ask at the same instant while each query takes 0.3 s: without the re-check after the
    # lock they would query one after the other (6 queries, 1.8 s); with it, the first query's
    # waiters use its answer. Jobs registered before the start are all in that first query.
    for job in range(21, 27):
        SharedPoller(CountingClient(tmp_path / "q0"), tmp_path / "poll")._register("jobs", str(job))
    ctx = multiprocessing.get_context("fork")
    results, go = ctx.Queue(), ctx.Event()
    procs = [ctx.Process(target=_follow, args=(str(tmp_path / "poll"), str(tmp_path / "q"), str(job), go, results))
             for job in range(21, 27)]
    for proc in procs:
        proc.start()
    time.sleep(0.5)
    go.set()
    outcome = [results.get(timeout=30) for _ in procs]
    for proc in procs:
        proc.join(timeout=10)
    assert all(answers == ["RUNNING"] * 3 for _, answers, _ in outcome)
    queries = CountingClient(tmp_path / "q").queries()
    assert sum(calls for _, _, calls in outcome) == len(queries)
    assert len(queries) == 1, queries
    assert queries[0] == [str(job) for job in range(21, 27)]
