"""The transport a step uses to reach a cluster: commands through the cluster's shared OpenSSH
session (the default), or one paramiko connection per process (`ssh.session: process`).

Both offer the same calls: `run(command, stdin=, timeout=, check=, idempotent=)`, `put(data, path,
mode)`, `close()`, and the attributes `target` and `connects` (logins this process made).
"""

from __future__ import annotations

import shlex
import subprocess
import threading

from components.core.session import Session
from components.core.ssh_target import (
    CommandResult, ContactLost, NoSession, RemoteCommandError, SSHTarget, TransportError, put_command, put_timeout_s,
)

# ssh(1) exits 255 for its own errors; these words in its stderr say the multiplexer failed, not the command.
_MUX_FAILURES = ("mux_client", "control socket", "controlsocket", "session open refused", "master is not running",
                 "kex_exchange_identification", "connection closed by")


class SessionTransport:
    """Commands over the cluster's shared session: one `ssh` client per command, multiplexed over
    the master that `hpc login` (or the first use, for keys and certificates) opened."""

    def __init__(self, target: SSHTarget):
        self.target = target
        self.session = Session(target)
        self._lock = threading.Lock()

    @property
    def connects(self) -> int:
        return self.session.opens

    def _ensure(self) -> None:
        with self._lock:
            self.session.ensure()

    def run(self, command: str, *, stdin: bytes | None = None, timeout: float | None = 120, check: bool = True,
            idempotent: bool = True) -> CommandResult:
        """Run one command through bash on the login node and read its output to the end.

        `timeout` (seconds) bounds the command. When the master is gone (login node rebooted, the
        connection dropped) it is reopened where the profile allows and an idempotent command run
        again; a command that must not run twice (sbatch) is not.
        Raises NoSession (password + OTP cluster with no session), ContactLost (no answer),
        TransportError (host key or credentials refused), RemoteCommandError for a non-zero exit
        with `check`.
        """
        last = "no answer"
        for _ in range(2 if idempotent else 1):
            self._ensure()
            try:
                proc = subprocess.run(self.session.command("bash -c " + shlex.quote(command)), input=stdin or b"",
                                      capture_output=True, timeout=timeout)
            except subprocess.TimeoutExpired:
                last = f"no answer within {timeout:.0f}s"
                continue
            stderr = proc.stderr.decode(errors="replace")
            if proc.returncode == 255 and self._master_failed(stderr):
                last = stderr.strip().splitlines()[-1] if stderr.strip() else "the session's master connection ended"
                continue
            result = CommandResult(proc.returncode, proc.stdout.decode(errors="replace"), stderr)
            if check and result.exit_code != 0:
                raise RemoteCommandError(command, result)
            return result
        raise ContactLost(f"lost the SSH session to {self.target.login.host}: {last}")

    def _master_failed(self, stderr: str) -> bool:
        """Was a 255 the session's failure (then forget the dead master) or the command's own exit code?"""
        if self.session.alive():
            return any(word in stderr.lower() for word in _MUX_FAILURES)
        with self._lock:
            self.session.forget()
        if self.target.auth == "password_otp" and not self.session.env_secrets():
            raise self.session.no_session(f"the session for {self.target.cluster} ended (the connection dropped "
                                          "or the login node restarted)")
        return True

    def put(self, data: bytes, remote_path: str, mode: int = 0o600) -> None:
        """Write a file private from its first byte and whole or not at all (renamed into place)."""
        self.run(put_command(remote_path, len(data), mode), stdin=data, timeout=put_timeout_s(len(data)))

    def close(self) -> None:
        """Nothing to do: the session outlives this process (`hpc logout` ends it)."""


_POOL: dict[SSHTarget, object] = {}
_POOL_LOCK = threading.Lock()


def transport_for(target: SSHTarget):
    """The process-wide transport for a target: a SessionTransport, or with `ssh.session: process`
    one paramiko connection (components.core.ssh.Transport) that concurrent steps share."""
    with _POOL_LOCK:
        # Keyed by the whole target: a different known_hosts or key is a different connection.
        transport = _POOL.get(target)
        if transport is None:
            if target.session == "process":
                from components.core.ssh import Transport  # paramiko loads only where it is used

                transport = Transport(target)
            else:
                transport = SessionTransport(target)
            _POOL[target] = transport
        return transport


def close_all() -> None:
    """Close this process's connections (a shared session stays open for other processes)."""
    with _POOL_LOCK:
        for transport in _POOL.values():
            transport.close()
        _POOL.clear()

