"""Run the Metaxy steps (resolve, ingest, commit) where the metadata store is.

Local profiles keep the store on this machine: the steps run in the Dagster process. Slurm
profiles keep it on the cluster's shared filesystem: the steps run on the login node, in the job's
environment, through the same SSH connection that submits the job. Both write the request and the
increment into a private staging directory that the workload reads through $HPC_METAXY_REQUEST.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg

from components.core import environments
from components.core.profiles import ClusterProfile
from components.core.local import KEEP_JOB_DIRS_ENV
from components.core.job_record import pack
from components.core.render import RUNTIME_DIR, RUNTIME_PACKAGE
from components.runtime.names import DATA_ERROR_FILE

if TYPE_CHECKING:
    from components.core.ssh import Transport

REQUEST_FILE = "request.json"
RESULT_PREFIX, ERROR_PREFIX = "hpc-result ", "hpc-error "


def _data_failure(key: str, problem: str, fix: str, written: int = 0) -> dg.Failure:
    # A step refuses before it touches the store; a workload's write refuses its rows before they reach it.
    if written:
        after = f"the refused rows were not written; {written} row(s) written before them in this run are stored for {key}"
    else:
        after = f"nothing was written to the store for {key}"
    return dg.Failure(description=f"{problem}\n  fix: {fix}\n{after}")


def workload_data_failure(key: str, recorded: str | None) -> dg.Failure | None:
    """The step's failure for a workload that died on refused data (data-error.json's text), else None."""
    if not recorded:
        return None
    try:
        error = json.loads(recorded)
        return _data_failure(key, error["problem"], error["fix"], int(error.get("written") or 0))
    except (ValueError, KeyError, TypeError):
        return None  # unreadable: the workload's own failure (exit code, stderr) is the better report


class LocalSteps:
    def __init__(self, staging: Path):
        self.staging_path = staging
        staging.mkdir(parents=True, exist_ok=True, mode=0o700)
        staging.chmod(0o700)
        self.staging = str(staging.resolve())

    def stage(self, request: dict) -> None:
        (self.staging_path / REQUEST_FILE).write_text(json.dumps(request), encoding="utf-8")

    def run(self, step: str, request: dict) -> dict:
        # Metaxy and Polars load here, not with the definitions: every step process loads those.
        from components.runtime import increment
        from components.runtime.steps import STEPS

        self.stage(request)
        try:
            return STEPS[step](request)
        except increment.FeatureDataError as exc:
            raise _data_failure(request["target"], exc.problem, exc.fix) from None

    @property
    def request_path(self) -> str:
        return f"{self.staging}/{REQUEST_FILE}"

    def data_error(self) -> str | None:
        """What the workload recorded when it refused its own data (JSON text), or None."""
        path = self.staging_path / DATA_ERROR_FILE
        return path.read_text(encoding="utf-8") if path.is_file() else None

    def cleanup(self) -> None:
        if not os.environ.get(KEEP_JOB_DIRS_ENV):
            shutil.rmtree(self.staging_path, ignore_errors=True)


class RemoteSteps:
    def __init__(self, transport: Transport, profile: ClusterProfile, project_root: Path, base_dir: str, staging: str):
        self.transport, self.profile, self.project_root, self.base_dir = transport, profile, project_root, base_dir
        self.staging = staging
        q = shlex.quote
        transport.run(f"umask 077; mkdir -p {q(staging)} && chmod 700 {q(staging)} && tar -xzf - -C {q(staging)}",
                      stdin=pack({RUNTIME_PACKAGE: RUNTIME_DIR}))

    @property
    def request_path(self) -> str:
        return f"{self.staging}/{REQUEST_FILE}"

    def stage(self, request: dict) -> None:
        self.transport.put(json.dumps(request).encode(), self.request_path)

    def run(self, step: str, request: dict) -> dict:
        self.stage(request)
        command = environments.login_command(
            self.profile, self.project_root, self.base_dir, ["-m", RUNTIME_PACKAGE, step, self.request_path]
        )
        q = shlex.quote
        result = self.transport.run(f"cd {q(self.staging)} && export PYTHONPATH={q(self.staging)}; {command}",
                                    check=False, timeout=3600)
        for line in reversed(result.stdout.splitlines()):
            if line.startswith(RESULT_PREFIX) and result.exit_code == 0:
                return json.loads(line[len(RESULT_PREFIX):])
            if line.startswith(ERROR_PREFIX):
                error = json.loads(line[len(ERROR_PREFIX):])
                raise _data_failure(request["target"], error["problem"], error["fix"])
        raise dg.Failure(
            description=(
                f"metaxy step {step!r} failed on the login node of {self.profile.name} (exit code {result.exit_code})\n"
                f"--- stderr ---\n{result.stderr.strip()[-3000:]}"
            )
        )

    def data_error(self) -> str | None:
        """What the workload recorded when it refused its own data (JSON text), or None."""
        result = self.transport.run(f"cat {shlex.quote(self.staging)}/{DATA_ERROR_FILE}", check=False)
        return result.stdout if result.exit_code == 0 else None

    def cleanup(self) -> None:
        if not os.environ.get(KEEP_JOB_DIRS_ENV):
            self.transport.run(f"rm -rf {shlex.quote(self.staging)}", check=False)
