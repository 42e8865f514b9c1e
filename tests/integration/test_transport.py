"""The SSH transport against the real login node's sshd: whole answers, and lost contact named as such."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest

from components.core.profiles import load_profile
from components.core.ssh import ContactLost, Hop, Transport, target_for
from tests.conftest import ROOT
from tests.integration.conftest import _cluster

pytestmark = pytest.mark.integration


def _target(jump: bool):
    target = target_for(load_profile("docker", ROOT / "clusters"))
    return replace(target, jumps=(Hop("127.0.0.1", 2223, target.login.user),)) if jump else target


@pytest.fixture
def transport(slurm_cluster):
    transport = Transport(_target(jump=False))
    yield transport
    transport.close()


@pytest.mark.parametrize("jump", [False, True], ids=["direct", "via-jump-host"])
def test_large_answers_arrive_whole(slurm_cluster, jump):
    # 3.6 MB per answer, beyond the SSH window: the exit status can overtake the last data. Through a
    # jump host (two hops, as at most sites) a reader that stops at the exit status came back short
    # on most of 40 tries here.
    transport = Transport(_target(jump))
    command = "head -c 2700000 /dev/zero | base64 -w 1000"
    try:
        sizes = sorted(len(transport.run(command).stdout) for _ in range(40))
    finally:
        transport.close()
    assert set(sizes) == {3600000 + 3600}, sizes


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
