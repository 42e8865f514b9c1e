"""Credentials for the SSH transport: OpenSSH certificates (checked before use) and password + OTP
answers to keyboard-interactive prompts (from the environment, else asked once per process)."""

from __future__ import annotations

import base64
import getpass
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import paramiko

from components.core.errors import ConfigError
from components.core.ssh_target import OTP_WORDS

if TYPE_CHECKING:
    from components.core.ssh import SSHTarget


# --- certificates -------------------------------------------------------------------------------

def certificate_validity(cert_file: str) -> tuple[int, int]:
    """(valid_after, valid_before) in epoch seconds, read from an OpenSSH certificate."""
    parts = Path(cert_file).read_text().split()
    if len(parts) < 2 or "-cert-v01@openssh.com" not in parts[0]:
        raise ConfigError(f"{cert_file} is not an OpenSSH certificate", fix="point certificate_file at <key>-cert.pub")
    msg = paramiko.Message(base64.b64decode(parts[1]))
    kind = msg.get_text()
    msg.get_string()  # nonce
    # The public key fields differ per algorithm; skip exactly the ones this type carries.
    if kind.startswith("ssh-rsa"):
        msg.get_mpint(), msg.get_mpint()
    elif kind.startswith("ssh-ed25519"):
        msg.get_string()
    elif kind.startswith("ecdsa-"):
        msg.get_string(), msg.get_string()
    else:
        raise ConfigError(f"{cert_file}: unsupported certificate type {kind}")
    msg.get_int64()  # serial
    msg.get_int()  # type
    msg.get_string()  # key id
    msg.get_string()  # principals
    return msg.get_int64(), msg.get_int64()


def check_certificate(cert_file: str, now: float | None = None) -> None:
    valid_after, valid_before = certificate_validity(cert_file)
    now = time.time() if now is None else now
    if now >= valid_before:
        expired = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(valid_before))
        raise ConfigError(
            f"SSH certificate {cert_file} expired at {expired}",
            fix="renew it (for step-ca: step ssh certificate <email> <key> --provisioner <name>), then retry",
        )
    if now < valid_after:
        raise ConfigError(f"SSH certificate {cert_file} is not valid yet", fix="check the local clock")


# --- password + OTP -------------------------------------------------------------------------------

_SECRETS: dict[str, str] = {}
_SECRETS_LOCK = threading.Lock()


def _secret(env: str | None, prompt: str) -> str:
    """From the environment, else asked once per process (never stored on disk)."""
    if env and os.environ.get(env):
        return os.environ[env]
    with _SECRETS_LOCK:
        if prompt not in _SECRETS:
            _SECRETS[prompt] = getpass.getpass(prompt)
        return _SECRETS[prompt]


def interactive_answers(target: SSHTarget) -> Callable[[str, str, list[tuple[str, bool]]], list[str]]:
    """Answer keyboard-interactive prompts: 'password' gets the password, code/OTP/token prompts the OTP."""

    def handler(title: str, instructions: str, prompts: list[tuple[str, bool]]) -> list[str]:
        answers = []
        for prompt, _echo in prompts:
            lower = prompt.lower()
            if any(word in lower for word in OTP_WORDS):
                answers.append(_secret(target.otp_env, f"OTP for {target.login.user}@{target.login.host}: "))
            else:
                answers.append(_secret(target.password_env, f"Password for {target.login.user}@{target.login.host}: "))
        return answers

    return handler
