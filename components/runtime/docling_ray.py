"""Ray actors converting documents, for docling_pool: started in the background, stopped when overdue.

Locally `ray.init` starts a private Ray with the CPUs the pool needs; in a Slurm job the job
script has started a cluster over the allocation (clusters/templates/ray_cluster.sh.j2) and set
RAY_ADDRESS, and the pool joins it once every node is up.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from .docling_convert import Converter, failed_row

if TYPE_CHECKING:
    from .docling_pool import DocList

Log = Callable[[str], None]

IN_FLIGHT = 2  # documents queued per actor, so an actor never waits for the driver


def available_cpus() -> int:
    """CPUs this job may use: the Slurm allocation's (all Ray nodes) or this process's affinity."""
    if os.environ.get("RAY_ADDRESS") and os.environ.get("SLURM_CPUS_PER_TASK"):
        return int(os.environ["SLURM_CPUS_PER_TASK"]) * int(os.environ.get("HPC_RAY_NODES", "1"))
    return len(os.sched_getaffinity(0))


def _join_cluster(address: str, nodes: int, timeout_s: float) -> None:
    """Connect once the head answers, then wait until every node of the job has joined."""
    import ray

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            ray.init(address=address, logging_level="WARNING", log_to_driver=True)
            break
        except (ConnectionError, RuntimeError) as exc:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the Ray head at {address} did not answer within {timeout_s:.0f}s: {exc}; "
                                   "see the job's slurm-*.err for the ray start output") from None
            time.sleep(2)
    while (alive := sum(1 for node in ray.nodes() if node["Alive"])) < nodes:
        if time.monotonic() > deadline:
            ray.shutdown()
            raise RuntimeError(f"only {alive} of {nodes} Ray nodes joined within {timeout_s:.0f}s; "
                               "see the job's slurm-*.err (srun steps of ray start)")
        time.sleep(1)


class _Actor:
    def __init__(self, handle, ready_ref):
        self.handle, self.ready_ref = handle, ready_ref
        self.info: dict | None = None
        self.inflight: deque = deque()  # (ObjectRef, document index)
        self.head_started = 0.0  # monotonic s when the first document in flight began (as seen from here)


class RayPool:
    """Ray actors converting documents, started by a background thread.

    The thread must live as long as Ray does: Ray's own processes die with the thread that
    started them (PR_SET_PDEATHSIG), so it waits for `shutdown`.
    """

    def __init__(self, options: dict, formats: list[str], output: str, ray_options: dict, workers: int | None, log: Log,
                 reserve: int = 0):
        """workers: actors to start, or None for as many as the cluster's CPUs (and GPUs) hold, less
        `reserve` CPUs kept for the workload's own converter."""
        self.args = (options, formats, output)
        self.ray_options, self.workers, self.log, self.reserve = ray_options, workers, log, reserve
        self.actors: list[_Actor] = []
        self.error: BaseException | None = None
        self.started = time.monotonic()
        self.up_s: float | None = None
        self.ready_s: list[float] = []
        self.up, self.stop = threading.Event(), threading.Event()
        self.thread = threading.Thread(target=self._run, name="ray-start", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        import ray

        try:
            if os.environ.get("RAY_ADDRESS"):
                # Inside a Slurm job: the job script is starting a cluster with the job's resources.
                _join_cluster(os.environ["RAY_ADDRESS"], int(os.environ.get("HPC_RAY_NODES", "1")),
                              float(os.environ.get("HPC_RAY_START_TIMEOUT_S", "180")))
            else:
                cpw, gpw = float(self.ray_options.get("cpus_per_worker", 1)), float(self.ray_options.get("gpus_per_worker", 0))
                if self.workers is None and not gpw:
                    self.workers = max(1, int(available_cpus() // max(cpw, 0.01)) - self.reserve)
                # Only the CPUs the actors use: Ray starts a worker process per CPU in advance.
                ray.init(num_cpus=self.workers * cpw if self.workers else available_cpus(),
                         num_gpus=self.workers * gpw if self.workers and gpw else None,  # None: Ray counts the GPUs
                         object_store_memory=self.ray_options.get("object_store_memory_bytes"),
                         include_dashboard=False, logging_level="WARNING")
            self.up_s = time.monotonic() - self.started
            if self.workers is None:
                self.workers = max(1, self._fitting_workers(ray.cluster_resources()) - self.reserve)
            self.remote = ray.remote(Converter).options(
                num_cpus=float(self.ray_options.get("cpus_per_worker", 1)),
                num_gpus=float(self.ray_options.get("gpus_per_worker", 0)), max_restarts=0, max_task_retries=0)
            for _ in range(self.workers):
                self.spawn()
            self.log(f"ray: up in {self.up_s:.1f}s with {ray.cluster_resources().get('CPU', 0):g} CPUs; "
                     f"starting {self.workers} converter actor(s)")
        except BaseException as exc:  # reported to the main thread, which decides
            self.error = exc
        finally:
            self.up.set()
        self.stop.wait()

    def _fitting_workers(self, resources: dict) -> int:
        cpus = int(resources.get("CPU", 1) // max(0.01, float(self.ray_options.get("cpus_per_worker", 1))))
        gpus_per = float(self.ray_options.get("gpus_per_worker", 0))
        if gpus_per:
            cpus = min(cpus, int(resources.get("GPU", 0) // gpus_per))
        return max(1, cpus)

    def spawn(self) -> None:
        handle = self.remote.remote(*self.args)
        self.actors.append(_Actor(handle, handle.describe.remote()))

    @property
    def usable(self) -> bool:
        return self.up.is_set() and self.error is None

    @property
    def all_ready(self) -> bool:
        return self.usable and bool(self.actors) and all(a.info is not None for a in self.actors)

    def refs(self) -> list:
        return [a.ready_ref for a in self.actors if a.info is None] + [ref for a in self.actors for ref, _ in a.inflight]

    def step(self, docs: DocList, pending: deque, limit: float | None, done: Callable[[int, dict, str], None]) -> bool:
        """Collect finished work, stop overdue documents, hand out more. True if anything happened."""
        import ray

        if not self.usable:
            return False
        refs = self.refs()
        finished = set(ray.wait(refs, num_returns=len(refs), timeout=0)[0]) if refs else set()
        now = time.monotonic()
        happened = False
        for actor in list(self.actors):
            if actor.info is None and actor.ready_ref in finished:
                happened = True
                try:
                    actor.info = ray.get(actor.ready_ref)
                except Exception as exc:
                    self.actors.remove(actor)
                    raise RuntimeError(f"a Ray converter actor failed to start: {str(exc).strip().splitlines()[-1][:500]}") from None
                self.ready_s.append(now - self.started)
                self.log(f"ray: converter actor ready after {now - self.started:.1f}s on {actor.info['device']}")
            while actor.inflight and actor.inflight[0][0] in finished:
                happened = True
                ref, index = actor.inflight.popleft()
                began, actor.head_started = actor.head_started, now
                try:
                    done(index, ray.get(ref), "ray")
                except ray.exceptions.RayActorError as exc:
                    reason = str(exc).strip().splitlines()[0][:300]
                    done(index, failed_row(docs.ids[index], self.args[2], f"the Ray actor converting it died: {reason}",
                                           now - began), "ray")
                    self._replace(actor, pending)
                    break
            if actor in self.actors and actor.inflight and limit and now - actor.head_started > limit:
                happened = True
                ref, index = actor.inflight.popleft()
                done(index, failed_row(docs.ids[index], self.args[2], docs.stopped(now - actor.head_started), now - actor.head_started), "ray")
                ray.kill(actor.handle, no_restart=True)
                self._replace(actor, pending)
        for actor in self.actors:
            while actor.info is not None and len(actor.inflight) < IN_FLIGHT and pending:
                index = pending.popleft()  # the costliest left
                if not actor.inflight:
                    actor.head_started = time.monotonic()
                actor.inflight.append((actor.handle.convert.remote(docs.ids[index], docs.paths[index]), index))
                happened = True
        return happened

    def _replace(self, actor: _Actor, pending: deque) -> None:
        """Put the dead actor's queued documents back (they did not fail) and start a fresh actor."""
        for _, index in reversed(actor.inflight):
            pending.appendleft(index)
        self.actors.remove(actor)
        self.spawn()

    def wait(self, timeout_s: float) -> None:
        import ray

        if not self.up.is_set():
            self.up.wait(timeout_s)
        elif refs := self.refs():
            ray.wait(refs, num_returns=1, timeout=timeout_s)
        else:
            time.sleep(timeout_s)

    def shutdown(self) -> None:
        import ray

        if self.up.is_set() and ray.is_initialized():
            ray.shutdown()
        self.stop.set()
