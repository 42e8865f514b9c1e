"""A Docling converter in a child process, so a document past its time limit can be stopped anywhere.

Docling checks `document_timeout` only between pages, and a document can stall inside one page
(a pathological layout, a hung file system), so a hard limit needs a process that can be killed.
The workload's own converter runs here when `docling.document_timeout_s` is set; Ray actors are
stopped with `ray.kill` instead (docling_pool).

Protocol: the parent writes one JSON line per document ({"doc_id", "path"}) to the child's stdin;
the child answers one JSON line: first {"ready": describe()} or {"setup_error", "kind"}, then
{"row": docling_convert.RESULT_SCHEMA row} per document, in order. Anything Docling prints goes to stderr.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

from .docling_convert import Converter, MissingPackages, MissingWeights

SETUP_ERRORS = {"MissingWeights": MissingWeights, "MissingPackages": MissingPackages}


def _package_root() -> str:
    """The directory to put on PYTHONPATH so `python -m <this package>` imports it (hpc_runtime in a
    job directory, components.runtime in the project)."""
    root = Path(__file__).parent
    for _ in __package__.split("."):
        root = root.parent
    return str(root)


class ConverterProcess:
    """The parent's handle on one child converter: start, submit one document, poll for its row, kill.

    Not thread-safe; one document in flight at a time. `poll` returns None while the child works.
    Raises MissingWeights/MissingPackages (from the child's build) from `poll` before the first row.
    """

    def __init__(self, options: dict, formats: list[str], output_dir: str):
        self.config = {"options": options, "formats": formats, "output_dir": output_dir}
        self.proc: subprocess.Popen | None = None
        self.info: dict | None = None
        self.current: tuple[str, float] | None = None  # (doc_id, started, monotonic s)
        self.start()

    def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (_package_root(), os.environ.get("PYTHONPATH")) if p)}
        self.proc = subprocess.Popen([sys.executable, "-m", f"{__package__}.docling_worker"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, env=env, text=True, bufsize=1, start_new_session=True)
        self.proc.stdin.write(json.dumps(self.config) + "\n")
        self.proc.stdin.flush()
        self.info = None
        self.current = None

    @property
    def ready(self) -> bool:
        return self.info is not None

    @property
    def idle(self) -> bool:
        return self.ready and self.current is None

    def submit(self, doc_id: str, path: str) -> None:
        self.current = (doc_id, time.monotonic())
        self.proc.stdin.write(json.dumps({"doc_id": doc_id, "path": path}) + "\n")
        self.proc.stdin.flush()

    def poll(self, timeout_s: float = 0.0) -> dict | None:
        """The next message's payload: a row, or None if nothing arrived within timeout_s.

        A child that died answers {"died": "exit code N" | "signal NAME"} instead.
        """
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout_s)
        if not ready:
            return None
        line = self.proc.stdout.readline()
        if not line:
            code = self.proc.wait()
            return {"died": f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"}
        message = json.loads(line)
        if "setup_error" in message:
            raise SETUP_ERRORS.get(message["kind"], RuntimeError)(message["setup_error"])
        if "ready" in message:
            self.info = message["ready"]
            return None
        self.current = None
        return message["row"]

    def kill(self) -> None:
        """Stop the child and everything it started (Docling's threads and helper processes)."""
        if self.proc and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()
        self.current = None

    def close(self) -> None:
        """Stop the child; every row it answered is already read, and its exit would only cost time."""
        self.kill()


def main() -> None:
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # Docling's and torch's prints go to stderr, never into the protocol
    config = json.loads(sys.stdin.readline())
    try:
        converter = Converter(config["options"], config["formats"], config["output_dir"])
    except (MissingWeights, MissingPackages) as exc:
        answers.write(json.dumps({"setup_error": str(exc), "kind": type(exc).__name__}) + "\n")
        return
    answers.write(json.dumps({"ready": converter.describe()}) + "\n")
    for line in sys.stdin:
        request = json.loads(line)
        answers.write(json.dumps({"row": converter.convert(request["doc_id"], request["path"])}) + "\n")


if __name__ == "__main__":
    main()
