"""One squeue (and one sacct) for all the jobs that the step processes on this machine follow on a cluster.

Without it every step process polls squeue for its own job, so the controller's load grows with the
number of running steps. Here the processes share, through files in a private directory (no daemon,
no socket):

    state_dir/jobs/<id>      a job some process follows; its mtime is refreshed on every question
    state_dir/ended/<id>     a job some process wants the sacct record of
    state_dir/queue.json     the last squeue answer: {"time" (started), "done", "ids", "states", "error", "serial"}
    state_dir/sacct.json     the last sacct answer:  {"time", "done", "ids", "text", "error", "serial"}
    state_dir/*.lock         flock(2) locks: whoever holds one asks the cluster for everybody

A question is answered from the cache file when it is young enough and covers the job; otherwise the
process takes the lock, looks again (another one may just have asked) and, if still stale, asks about
every registered job at once. Calls per minute are bounded by 1/min(max_age_s) of the callers.
"""

from __future__ import annotations

import json
import os
import time
from contextlib import contextmanager
from pathlib import Path

from components.core.shared_files import LockTimeout, flocked, private_dir, write_json
from components.core.scheduler import ACTIVE, Accounting, QueueState, SchedulerUnavailable, SlurmClient, _base_id
from components.core.ssh_target import ContactLost, NoSession

# A registration not refreshed for this long belongs to a process that died or moved on.
REGISTRATION_TTL_S = 600.0
# A failed query is handed to the processes that waited on the lock, and to callers for this long,
# so that they do not all retry at once; then the next caller asks again.
ERROR_HOLD_S = 2.0
# squeue/sacct may take up to their own 60 s timeout; waiting longer for the lock means a stuck holder.
LOCK_TIMEOUT_S = 150.0
_ERRORS = {cls.__name__: cls for cls in (SchedulerUnavailable, ContactLost, NoSession)}


class SharedPoller:
    """squeue/sacct answers shared by the processes that use the same `state_dir` (one per cluster session).

    `client` is a SlurmClient, or a transport (anything with `run`) to build one on. `state_dir` is
    created 0700 when missing; an existing one must belong to this user and be closed to others.
    Counters of this process: `questions` (queue_state calls), `squeue_calls`, `sacct_calls` (remote commands).
    Raises ConfigError for a directory owned by someone else, open to group/others, or not a directory.
    """

    def __init__(self, client, state_dir: Path, *, registration_ttl_s: float = REGISTRATION_TTL_S,
                 error_hold_s: float = ERROR_HOLD_S, lock_timeout_s: float = LOCK_TIMEOUT_S):
        self.client = client if hasattr(client, "queue_states") else SlurmClient(client)
        self.state_dir = Path(state_dir)
        self.registration_ttl_s = registration_ttl_s
        self.error_hold_s = error_hold_s
        self.lock_timeout_s = lock_timeout_s
        self.squeue_calls = 0
        self.sacct_calls = 0
        self.questions = 0
        private_dir(self.state_dir)
        for sub in ("jobs", "ended"):
            private_dir(self.state_dir / sub)

    # -- squeue ---------------------------------------------------------------------------------
    def queue_state(self, job_id: str, max_age_s: float) -> QueueState | None:
        """The job as the controller saw it at most `max_age_s` seconds ago (meaning as
        SlurmClient.queue_state): None when the controller does not know the job.

        Raises SchedulerUnavailable, ContactLost or NoSession as the client does (also when the shared
        query failed less than `error_hold_s` ago), SchedulerUnavailable when the lock stays held
        longer than `lock_timeout_s`, ValueError for an id that is not a Slurm job id.
        """
        job_id = _job_key(job_id)
        self.questions += 1
        asked_at = time.time()
        self._register("jobs", job_id)
        cache = self._fresh(self._read("queue.json"), job_id, asked_at, max_age_s)
        if cache is None:
            with self._locked("queue.lock"):
                # Another process may have asked while this one waited for the lock.
                cache = self._fresh(self._read("queue.json"), job_id, asked_at, max_age_s)
                if cache is None:
                    cache = self._query_queue(job_id)
        _raise_cached(cache)
        state = cache["states"].get(job_id)
        return QueueState(*state) if state else None

    def _query_queue(self, job_id: str) -> dict:
        ids = sorted(set(self._registered("jobs")) | {job_id}, key=_sort_key)
        started = time.time()
        cache = {"time": started, "ids": ids, "states": {}, "error": None, "serial": self._serial("queue.json") + 1}
        self.squeue_calls += 1
        try:
            states = self.client.queue_states(ids)
        except tuple(_ERRORS.values()) as exc:
            cache["error"] = {"kind": type(exc).__name__, "message": str(exc)}
        else:
            # Only the ids asked: an array's tasks ("123_4") are answers to "123_4", not to "123".
            cache["states"] = {key: [s.state, s.reason, s.nodes, s.restarts] for key, s in states.items() if key in ids}
        cache["done"] = time.time()
        self._write("queue.json", cache)
        return cache

    def forget(self, job_id: str) -> None:
        """This process no longer follows the job: stop asking squeue and sacct about it.

        Another process following the same job registers it again on its next question.
        """
        job_id = _job_key(job_id)
        for sub in ("jobs", "ended"):
            (self.state_dir / sub / job_id).unlink(missing_ok=True)

    # -- sacct ----------------------------------------------------------------------------------
    def accounting(self, job_id: str, attempts: int = 10, delay_s: float = 0.5) -> Accounting | None:
        """sacct's final record for the job, asked together with the other processes' ended jobs.

        Same meaning and patience as SlurmClient.accounting: records arrive a second or two after
        the end, so look again up to `attempts` times (about 11 s with the defaults); None then.
        A failed sacct counts as "no record yet". Raises ValueError for a malformed id.
        """
        job_id = _job_key(job_id)
        max_age_s = delay_s
        try:
            for attempt in range(attempts):
                self._register("ended", job_id)
                record = self._accounting_once(job_id, max_age_s)
                if record is not None and record.state not in ACTIVE:
                    return record
                max_age_s = delay_s * (1 + attempt // 3)
                time.sleep(max_age_s)
            return None
        finally:
            (self.state_dir / "ended" / job_id).unlink(missing_ok=True)

    def _accounting_once(self, job_id: str, max_age_s: float) -> Accounting | None:
        asked_at = time.time()
        cache = self._fresh(self._read("sacct.json"), job_id, asked_at, max_age_s)
        if cache is None:
            with self._locked("sacct.lock"):
                cache = self._fresh(self._read("sacct.json"), job_id, asked_at, max_age_s)
                if cache is None:
                    cache = self._query_sacct(job_id)
        if cache["error"]:
            return None
        return self.client.parse_accountings([job_id], cache["text"]).get(job_id)

    def _query_sacct(self, job_id: str) -> dict:
        ids = sorted(set(self._registered("ended")) | {job_id}, key=_sort_key)
        cache = {"time": time.time(), "ids": ids, "text": "", "error": None, "serial": self._serial("sacct.json") + 1}
        self.sacct_calls += 1
        try:
            # The raw text is cached: each process parses only its own job's rows.
            cache["text"] = self.client.sacct_text(ids)
        except tuple(_ERRORS.values()) as exc:
            cache["error"] = {"kind": type(exc).__name__, "message": str(exc)}
        cache["done"] = time.time()
        self._write("sacct.json", cache)
        return cache

    # -- files ----------------------------------------------------------------------------------
    def queries_total(self, name: str = "queue.json") -> int:
        """How many queries all processes made through this directory (the cache's serial number)."""
        return self._serial(name)

    def _fresh(self, cache: dict | None, job_id: str, asked_at: float, max_age_s: float) -> dict | None:
        """The cache if it may answer a question about job_id asked at `asked_at` (wall clock).

        An answer must come from a query started at most max_age_s before the question: a process
        that waited for the lock takes what the holder brought back, even if squeue was slow. An
        error stands for error_hold_s after the failed query ended (squeue to a dead controller
        takes 10-20 s), so the waiting processes do not each try again.
        """
        if cache is None or job_id not in cache["ids"]:
            return None
        if cache["error"]:
            return cache if cache.get("done", cache["time"]) >= asked_at - self.error_hold_s else None
        # A clock set back would make an old answer look new for ever: one from the future is stale.
        return cache if asked_at - max_age_s <= cache["time"] <= time.time() + 1.0 else None

    def _read(self, name: str) -> dict | None:
        try:
            cache = json.loads((self.state_dir / name).read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(cache, dict) or not {"time", "ids", "error"} <= cache.keys():
            return None
        return cache

    def _serial(self, name: str) -> int:
        cache = self._read(name)
        return int(cache.get("serial", 0)) if cache else 0

    def _write(self, name: str, cache: dict) -> None:
        # Readers never lock: they must see the old file or the new one, never half of one.
        write_json(self.state_dir / name, cache)

    def _register(self, sub: str, job_id: str) -> None:
        path = self.state_dir / sub / job_id
        try:
            os.utime(path)
        except FileNotFoundError:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600))

    def _registered(self, sub: str) -> list[str]:
        """Registered ids; drops those nobody refreshed within registration_ttl_s."""
        now = time.time()
        ids = []
        for entry in os.scandir(self.state_dir / sub):
            try:
                mtime = entry.stat(follow_symlinks=False).st_mtime
            except FileNotFoundError:
                continue  # forgotten meanwhile
            if now - mtime > self.registration_ttl_s:
                Path(entry.path).unlink(missing_ok=True)
            elif _is_job_key(entry.name):
                ids.append(entry.name)
        return ids

    @contextmanager
    def _locked(self, name: str):
        try:
            with flocked(self.state_dir / name, self.lock_timeout_s):
                yield
        except LockTimeout:
            raise SchedulerUnavailable(
                f"another process has held {self.state_dir / name} for over {self.lock_timeout_s:.0f}s "
                "(a squeue or sacct that does not return); no news of the job") from None


def _raise_cached(cache: dict) -> None:
    error = cache["error"]
    if error:
        cls = _ERRORS.get(error.get("kind"), SchedulerUnavailable)
        raise cls(f"{error.get('message')} (shared query, ended {time.time() - cache.get('done', cache['time']):.1f}s ago)")


def _job_key(job_id) -> str:
    """The id as a file name: digits, an optional "_<task>"; anything else is refused."""
    key = str(job_id).strip()
    if not _is_job_key(key):
        raise ValueError(f"not a Slurm job id: {job_id!r} (expected digits, or <id>_<task> for an array task)")
    _base_id(key)
    return key


def _is_job_key(name: str) -> bool:
    head, _, task = name.partition("_")
    return head.isdigit() and head.isascii() and (not task or (task.isdigit() and task.isascii()))


def _sort_key(job_id: str) -> tuple[int, str]:
    return (_base_id(job_id), job_id)
