"""Transport pieces that need no server: certificates, targets, OTP prompts."""

from __future__ import annotations

import subprocess
import time

import pytest

from components.core.errors import ConfigError
from components.core.profiles import load_profile
from components.core.ssh import SSHTarget, Hop, check_certificate, certificate_validity, interactive_answers, target_for


def _certificate(tmp_path, validity: str) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "ca")], check=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "user")], check=True)
    subprocess.run(
        ["ssh-keygen", "-q", "-s", str(tmp_path / "ca"), "-I", "test", "-n", "alice", "-V", validity, str(tmp_path / "user.pub")],
        check=True,
    )
    return str(tmp_path / "user-cert.pub")


def test_valid_certificate_passes(tmp_path):
    cert = _certificate(tmp_path, "-5m:+1h")
    after, before = certificate_validity(cert)
    assert after < time.time() < before
    check_certificate(cert)


def test_expired_certificate_is_a_clear_error(tmp_path):
    cert = _certificate(tmp_path, "-2h:-1h")
    with pytest.raises(ConfigError, match="expired at") as info:
        check_certificate(cert)
    assert "renew" in info.value.fix


def test_not_a_certificate(tmp_path):
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")], check=True)
    with pytest.raises(ConfigError, match="not an OpenSSH certificate"):
        check_certificate(str(tmp_path / "k.pub"))


def test_target_takes_user_from_environment(clusters_dir, monkeypatch):
    monkeypatch.setenv("LEONARDO_USER", "aturing0")
    target = target_for(load_profile("leonardo", clusters_dir))
    assert target.login == Hop("login.leonardo.cineca.it", 22, "aturing0")
    assert target.auth == "certificate" and target.certificate_file.endswith("leonardo-cert.pub")


def test_target_without_user_says_which_variable(clusters_dir, monkeypatch):
    monkeypatch.delenv("VSC5_USER", raising=False)
    with pytest.raises(ConfigError, match=r"set \$VSC5_USER"):
        target_for(load_profile("vsc5", clusters_dir))


def test_unset_path_variable_is_reported(clusters_dir, monkeypatch):
    monkeypatch.delenv("HPC_TEST_CLUSTER_DIR", raising=False)
    with pytest.raises(ConfigError, match="not set"):
        target_for(load_profile("docker", clusters_dir))


def test_password_and_otp_prompts_are_answered_from_the_environment(monkeypatch):
    monkeypatch.setenv("SITE_PW", "pw")
    monkeypatch.setenv("SITE_OTP", "123456")
    target = SSHTarget(login=Hop("h", 22, "u"), auth="password_otp", password_env="SITE_PW", otp_env="SITE_OTP")
    handler = interactive_answers(target)
    assert handler("", "", [("Password: ", False), ("Verification code: ", False)]) == ["pw", "123456"]
    assert handler("", "", [("OTP: ", False)]) == ["123456"]
