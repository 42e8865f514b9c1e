"""Runs launched the way users launch them: `dg dev` serving a project, runs and re-executions
through its GraphQL API (what the UI does), each run in its own process with the default
multiprocess executor. Results are read back from the instance on disk."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

from tests.conftest import VENV_BIN

LAUNCH = """
mutation($params: ExecutionParams!) { launchRun(executionParams: $params) {
  __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message } ... on InvalidSubsetError { message }
} }"""
REEXECUTE = """
mutation($params: ReexecutionParams!) { launchPipelineReexecution(reexecutionParams: $params) {
  __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message }
} }"""
TERMINATE = """
mutation($id: String!) { terminateRun(runId: $id) {
  __typename ... on TerminateRunFailure { message } ... on PythonError { message }
} }"""
STATUS = "query($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }"
LOCATION = "{ workspaceOrError { ... on Workspace { locationEntries { name locationOrLoadError { __typename "
LOCATION += "... on RepositoryLocation { repositories { name } } ... on PythonError { message } } } } } }"
TERMINAL = {"SUCCESS", "FAILURE", "CANCELED"}


class DagsterUI:
    """`dg dev` on a project directory, driven over GraphQL."""

    def __init__(self, project: Path, env: dict[str, str] | None = None, timeout_s: float = 180):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.project = project
        self.home = project / ".dagster"
        full_env = {
            **os.environ,
            "PYTHONPATH": str(project),
            "DAGSTER_HOME": str(self.home),
            "VIRTUAL_ENV": str(VENV_BIN.parent),
            "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            **(env or {}),
        }
        self.log_file = open(project / "dg-dev.log", "wb")  # noqa: SIM115 - closed in stop()
        self.server = subprocess.Popen(
            [str(VENV_BIN / "dg"), "dev", "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=project, env=full_env, stdout=self.log_file, stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                entries = self.query(LOCATION)["workspaceOrError"]["locationEntries"]
                location = entries[0]["locationOrLoadError"] if entries else None
                if location and location["__typename"] == "RepositoryLocation":
                    self.location, self.repository = entries[0]["name"], location["repositories"][0]["name"]
                    return
                if location and location["__typename"] == "PythonError":
                    raise RuntimeError(f"code location failed to load: {location['message']}")
            except OSError:
                pass
            if time.monotonic() > deadline or self.server.poll() is not None:
                self.stop()
                raise RuntimeError(f"dg dev did not come up: {(project / 'dg-dev.log').read_text()[-3000:]}")
            time.sleep(1)

    def query(self, text: str, variables: dict | None = None) -> dict:
        body = json.dumps({"query": text, "variables": variables or {}}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/graphql", data=body,
                                         headers={"Content-Type": "application/json"})
        answer = json.loads(urllib.request.urlopen(request, timeout=30).read())
        if answer.get("errors"):
            raise RuntimeError(answer["errors"])
        return answer["data"]

    def launch(self, keys: list[str], tags: dict[str, str] | None = None, run_config: dict | None = None) -> str:
        params = {
            "selector": {"repositoryLocationName": self.location, "repositoryName": self.repository, "jobName": "__ASSET_JOB",
                         "assetSelection": [{"path": key.split("/")} for key in keys]},
            "runConfigData": run_config or {},
            "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in (tags or {}).items()]},
        }
        return self._run_id(self.query(LAUNCH, {"params": params})["launchRun"])

    def reexecute(self, parent_run_id: str) -> str:
        params = {"parentRunId": parent_run_id, "strategy": "FROM_FAILURE"}
        return self._run_id(self.query(REEXECUTE, {"params": params})["launchPipelineReexecution"])

    @staticmethod
    def _run_id(answer: dict) -> str:
        if answer["__typename"] != "LaunchRunSuccess":
            raise RuntimeError(f"launch refused: {answer}")
        return answer["run"]["runId"]

    def terminate(self, run_id: str) -> None:
        """What the UI's Terminate button does."""
        answer = self.query(TERMINATE, {"id": run_id})["terminateRun"]
        if answer["__typename"] != "TerminateRunSuccess":
            raise RuntimeError(f"terminate refused: {answer}")

    def status(self, run_id: str) -> str:
        return self.query(STATUS, {"id": run_id})["runOrError"]["status"]

    def wait(self, run_id: str, timeout: float = 300) -> str:
        deadline = time.monotonic() + timeout
        while (status := self.status(run_id)) not in TERMINAL:
            if time.monotonic() > deadline:
                raise AssertionError(f"run {run_id} still {status} after {timeout}s")
            time.sleep(0.5)
        return status

    def instance(self):
        import dagster as dg

        return dg.DagsterInstance.from_config(str(self.home))

    def kill_run_processes(self, run_id: str) -> int:
        """SIGKILL every process working on the run: a dead orchestrator; returns how many were killed.

        Only the step workers' log capture (`tail -F .../<run id>/...`) names the run on its command
        line; its parent is the step worker, whose parent is the run worker (both multiprocessing
        spawn children, under the code server, which lives on). Those two and all their descendants go.
        """
        pids = _pids()
        parents = {pid: _parent(pid) for pid in pids}
        named = {pid for pid in pids if run_id.encode() in _cmdline(pid)}
        steps = {parents[pid] for pid in named if b"spawn_main" in _cmdline(parents[pid])}
        workers = {parents[pid] for pid in steps if b"spawn_main" in _cmdline(parents[pid])}
        doomed = named | steps | workers
        grew = True
        while grew:
            children = {pid for pid, parent in parents.items() if parent in doomed} - doomed
            doomed |= children
            grew = bool(children)
        killed = 0
        for pid in doomed:
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except ProcessLookupError:
                pass
        return killed

    def stop(self) -> None:
        try:
            os.killpg(self.server.pid, signal.SIGTERM)
            self.server.wait(timeout=60)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(self.server.pid, signal.SIGKILL)
        self.log_file.close()


def _pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _parent(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def run_logs(instance, run_id: str) -> list[str]:
    return [entry.user_message or "" for entry in instance.all_logs(run_id)]


def materializations(instance, run_id: str) -> dict[str, dict]:
    out = {}
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is not None and event.event_type_value == "ASSET_MATERIALIZATION":
            materialization = event.step_materialization_data.materialization
            out[materialization.asset_key.to_user_string()] = {k: v.value for k, v in materialization.metadata.items()}
    return out


def failures(instance, run_id: str) -> str:
    texts = []
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is not None and event.event_type_value == "STEP_FAILURE":
            error = event.step_failure_data.error
            while error is not None:
                texts.append(error.message)
                error = error.cause
    return "\n".join(texts)


def failure_metadata(instance, run_id: str) -> dict:
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is not None and event.event_type_value == "STEP_FAILURE" and event.step_failure_data.user_failure_data:
            return {k: v.value for k, v in event.step_failure_data.user_failure_data.metadata.items()}
    return {}


def captured_output(home: Path, run_id: str, suffixes: tuple[str, ...] = (".out", ".err")) -> str:
    """What the run's steps wrote to stdout (.out) and stderr (.err), as the compute log manager kept it."""
    texts = []
    for path in sorted((home / "storage").rglob("*")):
        if path.is_file() and run_id in str(path) and path.suffix in suffixes:
            texts.append(path.read_text(errors="replace"))
    return "\n".join(texts)
