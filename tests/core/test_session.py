"""Session bookkeeping that needs no server: the private directory, names, and the refusals a run
gets without a session. Opening real sessions is tested against the test cluster
(tests/integration/test_sessions.py)."""

from __future__ import annotations

import json
import os
import time

import pytest

from components.core.errors import ConfigError
from components.core.session import Session, refusal, session_dir
from components.core.ssh_target import ContactLost, Hop, NoSession, SSHTarget, TransportError


def _target(**changes) -> SSHTarget:
    base = dict(login=Hop("vsc5.vsc.ac.at", 22, "alice"), auth="password_otp", cluster="vsc5")
    return SSHTarget(**(base | changes))


@pytest.fixture
def sessions(tmp_path, monkeypatch):
    path = tmp_path / "s"
    monkeypatch.setenv("HPC_SESSION_DIR", str(path))
    return path


def test_directory_is_created_private(sessions):
    assert session_dir() == sessions
    assert oct(sessions.stat().st_mode & 0o777) == "0o700"


def test_a_directory_others_can_enter_is_refused(sessions):
    sessions.mkdir(mode=0o755)
    os.chmod(sessions, 0o755)
    with pytest.raises(ConfigError, match="not private") as info:
        session_dir()
    assert "chmod 700" in info.value.fix


def test_socket_path_too_long_names_the_fix(tmp_path, monkeypatch):
    deep = tmp_path / ("d" * 90)
    monkeypatch.setenv("HPC_SESSION_DIR", str(deep))
    with pytest.raises(ConfigError, match="too long") as info:
        Session(_target())
    assert "HPC_SESSION_DIR" in info.value.fix


def test_each_login_identity_has_its_own_session(sessions):
    one, other = Session(_target()), Session(_target(login=Hop("vsc5.vsc.ac.at", 22, "bob")))
    assert one.name.startswith("vsc5-") and one.name != other.name
    assert Session(_target()).paths == one.paths


def test_otp_run_without_session_fails_at_once_with_the_command(sessions, monkeypatch):
    monkeypatch.delenv("VSC5_PASSWORD", raising=False)
    started = time.monotonic()
    with pytest.raises(NoSession) as info:
        Session(_target(password_env="VSC5_PASSWORD", otp_env="VSC5_OTP")).ensure()
    assert time.monotonic() - started < 5
    assert "no session for vsc5" in str(info.value) and "hpc login vsc5" in str(info.value)


def test_otp_session_past_its_lifetime_is_closed_and_refused(sessions):
    session = Session(_target())
    session.dir.mkdir(exist_ok=True)
    open(session.paths.socket, "w").close()  # what a master leaves; nobody answers on it
    session.record_path.write_text(json.dumps({"expires_at": time.time() - 60, "opened_at": time.time() - 3600}))
    with pytest.raises(NoSession, match="expired at"):
        session.ensure()
    assert not os.path.exists(session.paths.socket) and not session.record_path.exists()


def test_openssh_errors_become_ours():
    target = _target(known_hosts="/k/known_hosts")
    unknown = refusal(target, "No ED25519 host key is known for [127.0.0.1]:2222 and you have requested strict checking.\n"
                              "Host key verification failed.\n")
    assert "refusing an unknown host key for [127.0.0.1]:2222" in str(unknown) and "ssh-keyscan -p 2222 127.0.0.1" in str(unknown)
    denied = refusal(target, "alice@vsc5.vsc.ac.at: Permission denied (keyboard-interactive).\n")
    assert type(denied) is TransportError and "hpc login vsc5" in str(denied)
    assert str(denied).startswith("authentication as alice on vsc5.vsc.ac.at:22 failed: vsc5 refused the password or one-time code")
    assert isinstance(refusal(target, "ssh: connect to host vsc5.vsc.ac.at port 22: Connection refused\n"), ContactLost)
