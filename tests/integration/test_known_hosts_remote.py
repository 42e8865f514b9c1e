"""known_hosts as sites ship it, against the real login sshd, which presents a host certificate signed
by the test host CA ($HPC_TEST_CLUSTER_DIR/ssh/host_ca.pub) as well as its plain key."""

from __future__ import annotations

import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from components.core.profiles import load_profile
from components.core.ssh import Hop, Transport, TransportError, target_for
from tests.conftest import ROOT

pytestmark = pytest.mark.integration

LOGIN = "[127.0.0.1]:2222"


def _lines(state: Path) -> dict[str, str]:
    ssh = state / "ssh"
    pinned = (ssh / "known_hosts").read_text()
    login_key = next(line.split(None, 1)[1].strip() for line in pinned.splitlines() if line.startswith(LOGIN))
    return {"ca": (ssh / "host_ca.pub").read_text().strip(), "pinned": pinned, "login_key": login_key}


def _attempt(state: Path, tmp_path: Path, text: str, **changes) -> str:
    """'ok' when a command ran over a Transport using `text` as known_hosts, else the refusal."""
    path = tmp_path / "known_hosts"
    path.write_text(text)
    target = replace(target_for(load_profile("docker", ROOT / "clusters")), known_hosts=str(path), **changes)
    transport = Transport(target)
    try:
        return "ok" if transport.run("echo ok").stdout == "ok\n" else "wrong answer"
    except TransportError as exc:
        message = str(exc)
        assert "\n" not in message and "Traceback" not in message, message
        return message
    finally:
        transport.close()


def _other_key(tmp_path: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "impostor")], check=True)
    return " ".join((tmp_path / "impostor.pub").read_text().split()[:2])


@pytest.mark.parametrize("case", ["ca_only", "ca_and_plain", "list_and_wildcard", "ca_with_a_broken_line"])
def test_accepted(slurm_cluster, tmp_path, case):
    k = _lines(slurm_cluster)
    text = {
        # The MUSICA shape: only the CA is listed, so the host's certificate is the only way in.
        "ca_only": f"# site CA\n\n@cert-authority {LOGIN} {k['ca']}\n",
        "ca_and_plain": f"@cert-authority [127.0.0.1]:* {k['ca']}\n{k['pinned']}",
        "list_and_wildcard": f"login.example.org,!10.0.0.1,[127.0.0.?]:2222 {k['login_key']} pinned by hand\n",
        "ca_with_a_broken_line": f"@cert-authority *.asc.ac.at ssh-ed25519 AAAA\n@cert-authority {LOGIN} {k['ca']}\n",
    }[case]
    assert _attempt(slurm_cluster, tmp_path, text) == "ok"


def test_hashed_entries(slurm_cluster, tmp_path):
    hashed = tmp_path / "hashed"
    hashed.write_text(_lines(slurm_cluster)["pinned"])
    subprocess.run(["ssh-keygen", "-q", "-H", "-f", str(hashed)], check=True, capture_output=True)
    assert "127.0.0.1" not in hashed.read_text()
    assert _attempt(slurm_cluster, tmp_path, hashed.read_text()) == "ok"


def test_a_ca_for_another_name_is_refused_with_the_pin_command(slurm_cluster, tmp_path):
    k = _lines(slurm_cluster)
    message = _attempt(slurm_cluster, tmp_path, f"@cert-authority *.asc.ac.at {k['ca']}\n")
    assert "refusing an unknown host key" in message and "is for *.asc.ac.at, which does not match [127.0.0.1]:2222" in message
    assert f"ssh-keyscan -p 2222 127.0.0.1 >> {tmp_path / 'known_hosts'}" in message


def test_revoked_plain_key_is_refused_although_pinned(slurm_cluster, tmp_path):
    k = _lines(slurm_cluster)
    message = _attempt(slurm_cluster, tmp_path, f"{k['pinned']}@revoked * {k['login_key']}\n")
    assert message.startswith("127.0.0.1:2222: its host key ssh-ed25519 SHA256:")
    assert "is marked @revoked at " in message and message.endswith("refusing to connect")


def test_revoked_ca_is_refused(slurm_cluster, tmp_path):
    k = _lines(slurm_cluster)
    message = _attempt(slurm_cluster, tmp_path, f"@cert-authority {LOGIN} {k['ca']}\n{k['pinned']}@revoked {LOGIN} {k['ca']}\n")
    assert "the CA key that signed its host certificate" in message and "@revoked" in message


def test_a_wrong_plain_key_keeps_the_does_not_match_message(slurm_cluster, tmp_path):
    message = _attempt(slurm_cluster, tmp_path, f"{LOGIN} {_other_key(tmp_path)}\n")
    assert "does not match" in message and "refusing to connect" in message and "ssh-keyscan -p 2222 127.0.0.1" in message


def test_jump_host_and_password_otp_use_the_same_check(slurm_cluster, tmp_path, monkeypatch):
    k = _lines(slurm_cluster)
    jump = (Hop("127.0.0.1", 2223, target_for(load_profile("docker", ROOT / "clusters")).login.user),)
    # The jump host is pinned plainly, the login node only through its CA.
    jump_line = next(line for line in k["pinned"].splitlines() if line.startswith("[127.0.0.1]:2223"))
    assert _attempt(slurm_cluster, tmp_path, f"{jump_line}\n@cert-authority {LOGIN} {k['ca']}\n", jumps=jump) == "ok"
    refused = _attempt(slurm_cluster, tmp_path, f"@cert-authority {LOGIN} {k['ca']}\n", jumps=jump)
    assert refused.startswith("127.0.0.1:2223 is not in")
    # password+OTP: the host check passes through the CA, then this sshd (keys only) refuses the method.
    monkeypatch.setenv("KH_TEST_PW", "x")
    monkeypatch.setenv("KH_TEST_OTP", "1")
    otp = {"auth": "password_otp", "password_env": "KH_TEST_PW", "otp_env": "KH_TEST_OTP"}
    assert _attempt(slurm_cluster, tmp_path, f"@cert-authority {LOGIN} {k['ca']}\n", **otp).startswith("authentication as ")
    assert "@revoked" in _attempt(slurm_cluster, tmp_path, f"{k['pinned']}@revoked * {k['login_key']}\n", **otp)
