"""Where and as whom to connect to a cluster, and the errors of a connection: no SSH library needed.

Split from ssh.py so that definitions load (in every step process) and job planning do not import
paramiko and fabric; only a step that really connects does.
"""

from __future__ import annotations

import getpass
import shlex
import os
from dataclasses import dataclass

from components.core.errors import ConfigError
from components.core.profiles import ClusterProfile, from_environment
from components.core.units import parse_time_s


# Words of a keyboard-interactive prompt that asks for the one-time code rather than the password
# (lower case), as sites word them; pam_oath asks "One-time password (OATH) for `user':".
OTP_WORDS = ("otp", "one-time", "code", "token", "verification", "oath")


class TransportError(RuntimeError):
    """The cluster could not be reached or refused us; the message says what to do."""


class NoSession(TransportError):
    """No usable session for a password + OTP cluster: only `hpc login <cluster>` in a terminal opens one."""


class ContactLost(TransportError):
    """The login node did not answer or the connection dropped: a passing fault, nothing about the job.

    Host-key and authentication failures are plain TransportErrors: they do not fix themselves.
    """


@dataclass(frozen=True)
class Hop:
    host: str
    port: int
    user: str


@dataclass(frozen=True)
class SSHTarget:
    """Everything needed to open a connection; derived from a profile and the environment."""

    login: Hop
    jumps: tuple[Hop, ...] = ()
    auth: str = "key"
    key_file: str | None = None
    certificate_file: str | None = None
    known_hosts: str = "~/.ssh/known_hosts"
    keepalive_s: int = 60
    password_env: str | None = None
    otp_env: str | None = None
    connect_timeout_s: float = 15.0
    cluster: str = ""  # the profile's name: names the session and goes into every message
    session: str = "shared"  # shared: one OpenSSH master for every process; process: one paramiko connection each
    session_lifetime_s: int = 12 * 3600


def expand(path: str | None) -> str | None:
    if path is None:
        return None
    expanded = os.path.expanduser(os.path.expandvars(path))
    if "$" in expanded:
        raise ConfigError(
            f"path {path!r} refers to an environment variable that is not set",
            fix="export the variable (for the docker profile: source the test cluster's env.sh)",
        )
    return expanded


def _user(user: str | None, user_env: str | None, fallback_env: str | None = None) -> str:
    value, _ = from_environment(user_env, user, fallback_env)
    if value:
        return value
    names = [n for n in (user_env, fallback_env) if n]
    if names:
        raise ConfigError(
            "no remote user: set " + " or ".join(f"${n}" for n in names),
            fix=f"export {names[0]}=<your login name on the cluster>",
        )
    return getpass.getuser()


def target_for(profile: ClusterProfile) -> SSHTarget:
    ssh = profile.ssh
    if ssh is None:
        raise ConfigError(f"profile {profile.name!r} has no ssh section", location=profile.location())
    default_user = _user(ssh.user, ssh.user_env, profile.project_user_env)
    jumps = tuple(
        Hop(j.host, j.port, _user(j.user, j.user_env) if (j.user or j.user_env) else default_user)
        for j in ssh.jump_hosts
    )
    return SSHTarget(
        login=Hop(ssh.host, ssh.port, default_user),
        jumps=jumps,
        auth=ssh.auth,
        key_file=expand(ssh.key_file),
        certificate_file=expand(ssh.certificate_file),
        known_hosts=expand(ssh.known_hosts) or "~/.ssh/known_hosts",
        keepalive_s=ssh.keepalive_s,
        password_env=ssh.password_env,
        otp_env=ssh.otp_env,
        cluster=profile.name,
        session=ssh.session,
        session_lifetime_s=parse_time_s(ssh.session_lifetime),
    )


@dataclass
class CommandResult:
    exit_code: int
    stdout: str
    stderr: str


class RemoteCommandError(TransportError):
    def __init__(self, command: str, result: CommandResult):
        self.result = result
        head = command if len(command) < 200 else command[:200] + "..."
        super().__init__(f"remote command failed with exit code {result.exit_code}: {head}\n{result.stderr.strip()}")


def put_command(remote_path: str, size: int, mode: int) -> str:
    """The command that writes stdin to `remote_path`: private from its first byte, whole or not at
    all (size checked, then renamed into place); `mode` applied before the rename."""
    path = shlex.quote(remote_path)
    part = shlex.quote(remote_path + ".part")
    return f"umask 077 && cat > {part} && test $(stat -c %s {part}) = {size} && chmod {mode:o} {part} && mv -f {part} {path}"


def put_timeout_s(size: int) -> float:
    """Seconds allowed for a put of `size` bytes: two minutes plus 1 s per MB for slow links."""
    return 120 + size / 1e6
