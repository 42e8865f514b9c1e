"""The test cluster's OTP login node (sshd-otp): password, then a TOTP code, through PAM
keyboard-interactive with the real pam_unix and pam_oath, as VSC-5's port 22. A code works once:
the property that makes one connection per process fail on such sites."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.integration.otp import LogMark, fresh_otp_code, otp_code, otp_env, otp_login, sshd_log

USER_PROMPTS = ["Password:", "One-time password (OATH) for `{user}':"]


@pytest.fixture
def node(slurm_cluster):
    return otp_env(slurm_cluster / "state")


@pytest.fixture
def otp_log(slurm_cluster):
    return LogMark(sshd_log("otp", slurm_cluster / "state"))


def _wrong_code(state_dir) -> str:
    # Not a code of any step pam_oath accepts now (window=20: 10 back, 10 ahead).
    valid = {otp_code(state_dir, k) for k in range(-11, 12)}
    return next(c for c in (f"{n:06d}" for n in range(123456, 999999, 7919)) if c not in valid)


def test_password_and_code_log_in_once_and_a_replay_is_refused(node, otp_log, slurm_cluster):
    code = fresh_otp_code(slurm_cluster / "state")
    first = otp_login(node, node.password, code)
    assert first.returncode == 0, first.output
    assert first.output.splitlines()[-1] == "ok"
    host = f"({node.user}@{node.host}) "
    assert first.prompts == [host + p.format(user=node.user) for p in USER_PROMPTS]
    assert otp_log.count(f"Accepted keyboard-interactive/pam for {node.user} from") == 1
    assert otp_log.count(f"Starting session: command for {node.user} from") == 1

    # The same code again, as a second process with its own connection would send it.
    again = otp_login(node, node.password, code)
    assert again.returncode == 255 and "Permission denied (keyboard-interactive)" in again.output, again.output
    assert len(again.prompts) == 2, "the replayed code must be refused by pam_oath, after the password"
    assert otp_log.count("Accepted keyboard-interactive/pam") == 1
    assert otp_log.count(f"Failed keyboard-interactive/pam for {node.user} from") == 1


def test_a_wrong_code_is_refused(node, otp_log, slurm_cluster):
    result = otp_login(node, node.password, _wrong_code(slurm_cluster / "state"))
    assert result.returncode == 255 and "Permission denied" in result.output, result.output
    assert len(result.prompts) == 2
    assert otp_log.count("Accepted ") == 0
    assert otp_log.count("Failed keyboard-interactive/pam") == 1


def test_a_wrong_password_ends_before_the_code_is_asked(node, otp_log):
    result = otp_login(node, node.password + "x", "000000")
    assert result.returncode == 255 and "Permission denied" in result.output, result.output
    assert result.prompts == [f"({node.user}@{node.host}) Password:"]
    assert otp_log.count("Accepted ") == 0


def test_the_key_only_login_node_still_refuses_passwords(node, slurm_cluster):
    # sshd-login shares /etc/pam.d/sshd with the OTP node but has UsePAM no: keys only.
    result = subprocess.run(
        ["ssh", "-F", "/dev/null", "-p", os.environ.get("HPC_TEST_SSH_PORT", "2222"), "-o", f"UserKnownHostsFile={node.known_hosts}",
         "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "PubkeyAuthentication=no",
         "-o", "PreferredAuthentications=keyboard-interactive,password", f"{node.user}@{node.host}", "true"],
        capture_output=True, text=True, timeout=30)
    assert result.returncode == 255
    assert "Permission denied (publickey)" in result.stderr, result.stderr
