"""The real test cluster: Slurm + slurmdbd + OpenSSH on 127.0.0.1, started for the session."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.conftest import ROOT

STATE_DIR = Path(os.environ.get("HPC_TEST_CLUSTER_DIR", "/tmp/hpc-test-cluster"))
# The login node's sshd log (LogLevel VERBOSE): one "Accepted ..." line per login, one "Starting session" per command.
SSHD_LOG = STATE_DIR / "state" / "log" / "sshd-login.log"


def _cluster(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "HPC_TEST_CLUSTER_DIR": str(STATE_DIR)}
    return subprocess.run(["bash", str(ROOT / "scripts" / "test-cluster.sh"), *args], env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def slurm_cluster():
    if os.geteuid() != 0:
        pytest.skip("the test cluster is brought up as root (apt packages and daemons)")
    up = _cluster("up")
    if up.returncode != 0:
        raise RuntimeError(f"test cluster failed to start:\n{up.stdout[-4000:]}\n{up.stderr[-4000:]}")
    os.environ["HPC_TEST_CLUSTER_DIR"] = str(STATE_DIR)
    # The tests' SSH sessions (ControlMasters) live apart from the user's own and end with the tests.
    sessions = Path(tempfile.mkdtemp(prefix="hpc-sessions-"))
    os.environ["HPC_SESSION_DIR"] = str(sessions)
    yield STATE_DIR
    from components.core.session import close_all as close_sessions
    from components.core.transports import close_all

    close_all()
    close_sessions(sessions)
    if os.environ.get("HPC_KEEP_TEST_CLUSTER") != "1":
        _cluster("down")


def ssh_as_user(state_dir: Path, command: str, check: bool = True) -> str:
    result = subprocess.run(
        ["ssh", "-F", str(state_dir / "ssh" / "ssh_config"), "hpc-login", command],
        capture_output=True, text=True, timeout=120,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"{command}: {result.stderr}")
    return result.stdout
