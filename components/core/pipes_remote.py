"""Dagster Pipes over SSH: context up as a file, messages and output tailed back from the job dir.

The reader never loses a line that reached the job directory: reads that fail (contact lost, a
short answer) leave the offsets where they were and are tried again, with a growing pause while
the login node is away; the final read after the job ended is retried for as long as the step's
outage tolerance allows and says whether it got everything (`drained`).

A requeued job runs its script again in the same directory: stdout/stderr are appended (the
script asks for --open-mode=append and marks where each execution starts) and the new execution
opens Pipes again. Results reported by an earlier execution are dropped, its logs are kept.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import json
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import dagster as dg

from components.core.ssh_target import TransportError

if TYPE_CHECKING:
    from components.core.ssh import Transport
from components.core.shared_tail import follower
from components.core.tail import LINE_CAP, ShortRead, StderrTail, cap_line

# Results (and the end of the session that follows them) count only from the job's last execution.
HELD_BACK = ("report_asset_materialization", "report_asset_check", "closed")


class RemoteFileContextInjector(dg.PipesContextInjector):
    """Writes the Pipes context to `path` on the cluster with `put(data, path)` (Transport.put, or a
    patient wrapper of it)."""

    def __init__(self, put: Callable[[bytes, str], None], path: str):
        self.put, self.path = put, path

    @contextmanager
    def inject_context(self, context_data):
        self.put(json.dumps(context_data).encode(), self.path)
        yield {"path": self.path}

    def no_messages_debug_text(self) -> str:
        return f"Pipes context was written to {self.path} on the cluster."


class RemoteFileMessageReader(dg.PipesMessageReader):
    """Tails the job's Pipes messages file and its stdout/stderr over the shared connection.

    interval_s: pause between reads while the job runs (seconds); it grows to max_backoff_s while
    reads fail. final_patience_s: how long the final read keeps trying after the job ended.
    log: where reader notes go (a Dagster logger); plain stderr when None.
    """

    def __init__(self, transport: Transport, job_dir: str, interval_s: float = 0.5, *,
                 final_patience_s: float = 300.0, max_backoff_s: float = 15.0, log: Callable[[str], None] | None = None):
        self.transport, self.job_dir, self.interval_s = transport, job_dir, interval_s
        self.messages_path = f"{job_dir}/pipes-messages.jsonl"
        self.stderr_tail = StderrTail()
        self.job_id: str | None = None
        self.final_patience_s = final_patience_s
        self.max_backoff_s = max_backoff_s
        self.drained = False
        self.executions = 1
        self._reports: list[dict] = []
        self._opened = False
        self._log = log or (lambda text: print(f"[hpc] {text}", file=sys.stderr))

    @contextmanager
    def read_messages(self, handler) -> Iterator[dict]:
        stop = threading.Event()
        thread = threading.Thread(target=self._follow, args=(handler, stop), daemon=True)
        thread.start()
        try:
            yield {"path": self.messages_path}
        finally:
            stop.set()
            thread.join(timeout=self.final_patience_s + 60)

    def _follow(self, handler, stop: threading.Event) -> None:
        tail = follower(self.transport, {"messages": self.messages_path}, self.interval_s)
        try:
            self._follow_with(tail, handler, stop)
        finally:
            close = getattr(tail, "close", None)
            if close is not None:
                try:
                    close()
                except Exception as exc:  # noqa: BLE001 - a leftover registration expires on its own
                    self._log(f"could not unregister the job's files from the shared reader: {exc}")

    def _follow_with(self, tail, handler, stop: threading.Event) -> None:
        pause = self.interval_s
        while True:
            final = stop.is_set()
            if self.job_id:
                tail.follow("stdout", f"{self.job_dir}/slurm-{self.job_id}.out")
                tail.follow("stderr", f"{self.job_dir}/slurm-{self.job_id}.err")
            if final:
                self.drained = self._final_reads(tail, handler)
                return
            try:
                read = tail.read()
            except (TransportError, ShortRead, OSError):
                # The poller reports contact loss; the reader only waits longer between tries.
                pause = min(max(pause * 2, 1.0), self.max_backoff_s)
                stop.wait(pause)
                continue
            pause = self.interval_s
            self._deliver(read, handler)
            if not read.more:
                stop.wait(self.interval_s)

    def _final_reads(self, tail, handler) -> bool:
        """Read to the end of every file, partial last lines included; False if contact never came back."""
        deadline = time.monotonic() + self.final_patience_s
        pause = 1.0
        while True:
            try:
                read = tail.read(final=True)
            except (TransportError, ShortRead, OSError) as exc:
                if time.monotonic() + pause > deadline:
                    self._log(f"could not read the job's last output from {self.job_dir}: {exc}")
                    return False
                time.sleep(pause)
                pause = min(pause * 2, self.max_backoff_s)
                continue
            self._deliver(read, handler)
            if not read.more:
                break
        for message in self._reports:
            handler.handle_message(message)
        self._reports.clear()
        return True

    def _deliver(self, read, handler) -> None:
        for name in read.truncated:
            self._log(f"{name} of job {self.job_id} was truncated (the job was requeued?): reading it again from the start")
        for line in read.lines.get("messages", []):
            try:
                message = json.loads(line)
            except json.JSONDecodeError:
                self._log(f"ignoring a malformed Pipes message: {cap_line(line, 200)}")
                continue
            self._handle(message, handler)
        for line in read.lines.get("stdout", []):
            sys.stdout.write(cap_line(line, LINE_CAP) + "\n")
        for line in read.lines.get("stderr", []):
            self.stderr_tail.append(line)
            sys.stderr.write(cap_line(line, LINE_CAP) + "\n")
        sys.stdout.flush()
        sys.stderr.flush()

    def _handle(self, message: dict, handler) -> None:
        method = message.get("method") if isinstance(message, dict) else None
        if method == "opened" and self._opened:
            # The same job directory, opened again: Slurm requeued the job and the script runs anew.
            self.executions += 1
            dropped = len(self._reports)
            self._reports.clear()
            self._log(f"job {self.job_id} requeued: execution {self.executions} opened Pipes"
                      + (f"; {dropped} result(s) reported by the earlier execution are dropped" if dropped else ""))
            return
        if method == "opened":
            self._opened = True
        if method in HELD_BACK:
            # Held back until the job has ended: a requeue may still replace them.
            self._reports.append(message)
            return
        handler.handle_message(message)

    def no_messages_debug_text(self) -> str:
        return f"Pipes messages are read from {self.messages_path} on the cluster."
