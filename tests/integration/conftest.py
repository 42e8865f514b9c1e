"""The real test cluster: Slurm + slurmdbd + OpenSSH on 127.0.0.1, started for the session."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT

STATE_DIR = Path(os.environ.get("HPC_TEST_CLUSTER_DIR", "/tmp/hpc-test-cluster"))


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
    yield STATE_DIR
    from components.core.ssh import close_all

    close_all()
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
