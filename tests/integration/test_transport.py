"""The SSH transport against the real login node's sshd: whole answers, and lost contact named as such."""

from __future__ import annotations

import time

import pytest

from components.core.profiles import load_profile
from components.core.ssh import ContactLost, Transport, target_for
from tests.conftest import ROOT
from tests.integration.conftest import _cluster

pytestmark = pytest.mark.integration


@pytest.fixture
def transport(slurm_cluster):
    transport = Transport(target_for(load_profile("docker", ROOT / "clusters")))
    yield transport
    transport.close()


def test_large_answers_arrive_whole(transport):
    # 3.6 MB per answer: beyond the SSH window, so the exit status can overtake the data.
    command = "head -c 2700000 /dev/zero | base64 -w 1000"
    sizes = {len(transport.run(command).stdout) for _ in range(40)}
    assert sizes == {3600000 + 3600}, sizes


def test_stdin_and_stderr_survive_together(transport):
    data = bytes(range(256)) * 8000  # 2 MB up
    result = transport.run("wc -c; echo done >&2", stdin=data)
    assert (int(result.stdout), result.stderr) == (len(data), "done\n")


def test_a_login_node_that_is_gone_is_contact_lost(transport):
    transport.run("true")
    _cluster("stop", "sshd-login")
    try:
        with pytest.raises(ContactLost, match="127.0.0.1"):
            transport.run("true")
        # Callers right after get the same answer at once instead of a connection storm.
        with pytest.raises(ContactLost):
            transport.run("true")
    finally:
        _cluster("start", "sshd-login")
    time.sleep(transport.retry_gap_s)
    assert transport.run("echo back").stdout == "back\n"
