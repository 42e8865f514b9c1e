"""squeue calls per minute as followers are added: the shared poller against each process polling alone.

    bash scripts/test-cluster.sh up        # once; then source /tmp/hpc-test-cluster/env.sh
    .venv/bin/python bench/shared_poller.py [--processes 6,12] [--sleep 30]

For each N, N spawned processes (as the multiprocess executor spawns step processes) each follow one
`sleep S` job on the test cluster with the steps' own adaptive schedule (job_record.POLL_SCHEDULE_S:
0.1 s after submission, growing to 5 s), once through one SharedPoller directory shared by all of them
and once each with its own `squeue -j <id>`. The jobs are submitted together once every follower is
ready. Prints the squeue calls the followers made (their own counters), the wall time and calls per
minute. The goal: flat calls per minute with the shared poller, whatever N.
"""

from __future__ import annotations

import argparse
import multiprocessing
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from components.core.poller import SharedPoller  # noqa: E402
from components.core.job_record import POLL_SCHEDULE_S  # noqa: E402
from components.core.scheduler import ACTIVE, SchedulerUnavailable, SlurmClient  # noqa: E402


def _client() -> SlurmClient:
    from components.core.profiles import load_profile
    from components.core.ssh_target import target_for
    from components.core.transports import transport_for

    return SlurmClient(transport_for(target_for(load_profile("docker", ROOT / "clusters"))))


def follow(state_dir: str | None, inbox, ready, results) -> None:
    """Follow the job id that arrives in `inbox` until it ends; report (state, squeue calls)."""
    client = _client()
    poller = SharedPoller(client, Path(state_dir)) if state_dir else None
    ready.put(True)
    job = inbox.get(timeout=300)
    polls = alone_calls = 0
    while True:
        interval = POLL_SCHEDULE_S[min(polls, len(POLL_SCHEDULE_S) - 1)]
        try:
            if poller is not None:
                state = poller.queue_state(job, interval)
            else:
                alone_calls += 1
                state = client.queue_state(job)
        except SchedulerUnavailable:
            time.sleep(interval)
            continue
        if state is None or state.state not in ACTIVE:
            break
        time.sleep(interval)
        polls += 1
    results.put((state.state if state else "gone", poller.squeue_calls if poller else alone_calls))


def measure(processes: int, sleep_s: int, shared: bool) -> tuple[int, float, set[str]]:
    """(squeue calls, wall seconds, final states) of one round with `processes` followers."""
    ctx = multiprocessing.get_context("spawn")
    ready, results = ctx.Queue(), ctx.Queue()
    inboxes = [ctx.Queue() for _ in range(processes)]
    state_dir = str(Path(tempfile.mkdtemp(prefix="hpc-poll-bench-")) / "poll") if shared else None
    procs = [ctx.Process(target=follow, args=(state_dir, inbox, ready, results)) for inbox in inboxes]
    for proc in procs:
        proc.start()
    for _ in procs:
        ready.get(timeout=300)
    started = time.monotonic()
    client = _client()
    submit = f"for i in $(seq {processes}); do sbatch --parsable --wrap 'sleep {sleep_s}'; done"
    jobs = [line.split(";")[0] for line in client.transport.run(submit).stdout.split()]
    for inbox, job in zip(inboxes, jobs):
        inbox.put(job)
    rows = [results.get(timeout=sleep_s * 20 + 300) for _ in procs]
    wall = time.monotonic() - started
    for proc in procs:
        proc.join(timeout=30)
    return sum(calls for _, calls in rows), wall, {state for state, _ in rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", default="6,12", help="comma-separated follower counts")
    parser.add_argument("--sleep", type=int, default=30, help="seconds each job runs")
    args = parser.parse_args()
    if subprocess.run(["sinfo", "-h"], capture_output=True).returncode != 0:
        sys.exit("no Slurm here: run `bash scripts/test-cluster.sh up` and `source /tmp/hpc-test-cluster/env.sh` first")
    print("| followers | shared: squeue | per minute | alone: squeue | per minute |")
    print("|---:|---:|---:|---:|---:|")
    for n in (int(x) for x in args.processes.split(",")):
        shared_calls, shared_wall, states = measure(n, args.sleep, shared=True)
        alone_calls, alone_wall, states_alone = measure(n, args.sleep, shared=False)
        print(f"| {n} | {shared_calls} | {60 * shared_calls / shared_wall:.1f} | {alone_calls} | "
              f"{60 * alone_calls / alone_wall:.1f} |  (end states {sorted(states | states_alone)})", flush=True)


if __name__ == "__main__":
    main()
