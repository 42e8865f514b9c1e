"""One authenticated session per cluster, shared by every process on this machine: an OpenSSH
ControlMaster that `hpc login` (or, for keys and certificates, the first command) opens and that
later step processes, runs, schedules and sensors use through its control socket.

This is the mechanism the sites document for OTP logins (a master connection with ControlPersist),
not a daemon of ours. Its files live in one directory private to the user (0700):
`<cluster>-<hash>.sock` (the control socket), `.ssh_config` (written from the profile, see
ssh_config.py), `.json` (when it was opened and when it expires), `.lock` (one opener at a time),
`.log` (OpenSSH's own errors). Runs never prompt: an OTP cluster without a session fails at once
with the command that opens one.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from components.core import ssh_config
from components.core.errors import ConfigError
from components.core.shared_files import LockTimeout, flocked, private_dir, read_json, write_json
from components.core.ssh_target import OTP_WORDS, ContactLost, NoSession, SSHTarget, TransportError

SESSION_DIR_ENV = "HPC_SESSION_DIR"
# sun_path is 108 bytes on Linux (104 on macOS); OpenSSH binds "<ControlPath>.<16 random chars>" first.
_SOCKET_PATH_MAX = 104 - 18
# How long to wait for another process that is opening the same session (seconds).
OPEN_WAIT_S = 120.0

_ASKPASS = """#!/bin/sh
# Written by `hpc`: answers OpenSSH's keyboard-interactive prompts from the environment variables
# that the profile names (ssh.password_env, ssh.otp_env); it holds no secret itself.
prompt=$(printf '%s' "$1" | tr '[:upper:]' '[:lower:]')
case $prompt in
  {otp_cases}) exec printenv "$HPC_ASKPASS_OTP_ENV" ;;
  *) exec printenv "$HPC_ASKPASS_PASSWORD_ENV" ;;
esac
"""


def session_dir() -> Path:
    """The private directory of this user's sessions: $HPC_SESSION_DIR, else ~/.cache/hpc/sessions,
    else (when socket paths there would be too long) /tmp/hpc-sessions-<uid>. Created 0700.

    Raises ConfigError when it exists but belongs to someone else or others may enter it.
    """
    configured = os.environ.get(SESSION_DIR_ENV)
    if configured:
        path = Path(configured).expanduser()
    else:
        path = Path.home() / ".cache" / "hpc" / "sessions"
        if len(str(path)) + 40 > _SOCKET_PATH_MAX:
            path = Path(f"/tmp/hpc-sessions-{os.getuid()}")
    return private_dir(path, f"${SESSION_DIR_ENV}" if configured else "the session directory")


def _fingerprint(target: SSHTarget) -> str:
    # Everything that decides whom we log in as and how: another key or host is another session.
    parts = [target.login, target.jumps, target.auth, target.key_file, target.certificate_file, target.known_hosts]
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:8]


@dataclass(frozen=True)
class SessionState:
    """What `hpc login --status` says about one session. Times are epoch seconds."""

    cluster: str
    alive: bool
    opened_at: float | None
    expires_at: float | None
    opened_by: str | None
    socket: str
    config: str

    def remaining_s(self, now: float | None = None) -> float | None:
        if not self.alive or self.expires_at is None:
            return None
        return max(0.0, self.expires_at - (time.time() if now is None else now))


class Session:
    """The session of one cluster target on this machine (there is at most one master per target)."""

    def __init__(self, target: SSHTarget, directory: Path | None = None):
        if not target.cluster:
            raise ValueError("an SSH session needs the cluster's name (SSHTarget.cluster)")
        self.target = target
        self.dir = directory or session_dir()
        self.name = f"{target.cluster}-{_fingerprint(target)}"
        base = self.dir / self.name
        self.paths = ssh_config.SessionPaths(config=f"{base}.ssh_config", socket=f"{base}.sock", log=f"{base}.log")
        self.record_path = Path(f"{base}.json")
        self.lock_path = Path(f"{base}.lock")
        self.poll_dir = Path(f"{base}.poll")
        self.alias = ssh_config.alias(target.cluster)
        if len(self.paths.socket) > _SOCKET_PATH_MAX:
            raise ConfigError(f"control socket path {self.paths.socket} is too long for a Unix socket",
                              fix=f"point ${SESSION_DIR_ENV} at a shorter directory, e.g. /tmp/hpc-$USER")
        self.opens = 0  # masters this process opened

    # -- the client command ---------------------------------------------------------------------
    def ssh(self, *args: str) -> list[str]:
        """`ssh -F <config> <args>`; ssh(1) must be on PATH."""
        binary = shutil.which("ssh")
        if binary is None:
            raise TransportError("the OpenSSH client `ssh` is not installed here; install openssh-client, "
                                 "or set ssh.session: process in the cluster profile")
        return [binary, "-F", self.paths.config, *args]

    def command(self, remote: str) -> list[str]:
        """A command through the master only: with no master, ssh must fail rather than log in anew
        (ProxyCommand=false makes the direct connection it would fall back to fail at once)."""
        return self.ssh("-o", "ControlMaster=no", "-o", "ProxyCommand=false", "-o", "BatchMode=yes", "-T", self.alias, remote)

    def write_config(self) -> None:
        text = ssh_config.render(self.target, self.paths, lifetime_s=self.target.session_lifetime_s)
        path = Path(self.paths.config)
        if not path.is_file() or path.read_text() != text:
            part = path.with_suffix(".part")
            part.write_text(text)
            os.chmod(part, 0o600)
            os.replace(part, path)

    # -- state ----------------------------------------------------------------------------------
    def record(self) -> dict | None:
        return read_json(self.record_path)

    def alive(self) -> bool:
        """Does a master answer on the control socket? (`ssh -O check`, a few ms)."""
        if not os.path.exists(self.paths.socket):
            return False
        self.write_config()
        result = subprocess.run(self.ssh("-O", "check", self.alias), capture_output=True, timeout=30)
        return result.returncode == 0

    def expired(self, now: float | None = None) -> float | None:
        """The expiry time (epoch seconds) if this session has run out, else None."""
        record = self.record()
        expires = record.get("expires_at") if record else None
        return expires if expires is not None and (time.time() if now is None else now) >= expires else None

    def state(self) -> SessionState:
        alive = self.alive()
        record = self.record() if alive else None
        return SessionState(self.target.cluster, alive, *(record.get(k) if record else None for k in ("opened_at", "expires_at", "opened_by")),
                            socket=self.paths.socket, config=self.paths.config)

    @contextlib.contextmanager
    def locked(self, wait_s: float = OPEN_WAIT_S) -> Iterator[None]:
        """One opener at a time: processes that find no master wait for the one opening it."""
        try:
            with flocked(self.lock_path, wait_s):
                yield
        except LockTimeout:
            raise ContactLost(f"another process has been opening the session to {self.target.cluster} for {wait_s:.0f}s") from None

    # -- opening and closing ----------------------------------------------------------------------
    def no_session(self, why: str) -> NoSession:
        return NoSession(f"{why}: run `hpc login {self.target.cluster}` in a terminal (password and one-time code); "
                         "runs never prompt")

    def env_secrets(self) -> bool:
        """Are the password and the one-time code both in the environment (automation)?"""
        names = (self.target.password_env, self.target.otp_env)
        return all(name and os.environ.get(name) for name in names)

    def ensure(self) -> None:
        """A master is up (opened here if the profile allows it without a person); else raises.

        Raises NoSession (password + OTP without a session or past its lifetime), ContactLost (the
        login node did not answer), TransportError (host key or credentials refused).
        """
        if os.path.exists(self.paths.socket) and self.expired() is None:
            return
        with self.locked():
            expired = self.expired()
            if expired is not None:
                self.close()
                if self.target.auth == "password_otp" and not self.env_secrets():
                    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(expired))
                    raise self.no_session(f"the session for {self.target.cluster} expired at {when}")
            if self.alive():
                return
            self.forget()
            if self.target.auth == "password_otp" and not self.env_secrets():
                raise self.no_session(f"no session for {self.target.cluster}")
            self.open(interactive=False, opened_by="first use")

    def open(self, *, interactive: bool, opened_by: str) -> None:
        """Start the master (`ssh -M -N -f`). Interactive: OpenSSH prompts on this terminal.
        Otherwise keys and certificates log in unattended (BatchMode) and password + OTP come from
        ssh.password_env / ssh.otp_env. The caller holds `locked()`. Raises as `ensure` does.
        """
        from components.core.ssh_auth import certificate_validity, check_certificate

        target = self.target
        self.write_config()
        expires = time.time() + target.session_lifetime_s
        if target.auth == "certificate" and target.certificate_file:
            check_certificate(target.certificate_file)
            expires = min(expires, certificate_validity(target.certificate_file)[1])
        args = ["-M", "-N", "-f", "-o", "ControlMaster=yes", "-E", self.paths.log]
        if target.auth == "password_otp":
            # One try: a code is good once, so a second round would only burn the next one.
            args += ["-o", "NumberOfPasswordPrompts=1"]
        env = dict(os.environ)
        if target.auth == "password_otp" and not interactive:
            askpass = self.dir / "askpass.sh"
            askpass.write_text(_ASKPASS.format(otp_cases="|".join(f"*{w}*" for w in OTP_WORDS)))
            os.chmod(askpass, 0o700)
            env |= {"SSH_ASKPASS": str(askpass), "SSH_ASKPASS_REQUIRE": "force", "HPC_ASKPASS_PASSWORD_ENV": target.password_env or "",
                    "HPC_ASKPASS_OTP_ENV": target.otp_env or ""}
        elif not interactive:
            args += ["-o", "BatchMode=yes"]
        log_start = os.path.getsize(self.paths.log) if os.path.exists(self.paths.log) else 0
        wait_s = target.connect_timeout_s * (len(target.jumps) + 1) + (600 if interactive else 30)
        try:
            result = subprocess.run(self.ssh(*args, self.alias), env=env, timeout=wait_s,
                                    stdin=None if interactive else subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=None if interactive else subprocess.PIPE)
        except subprocess.TimeoutExpired:
            raise ContactLost(f"no SSH session to {target.cluster} within {wait_s:.0f}s") from None
        if result.returncode != 0:
            with open(self.paths.log, "rb") as log:
                log.seek(log_start)
                text = log.read().decode(errors="replace") + (result.stderr or b"").decode(errors="replace")
            raise refusal(target, text)
        self.opens += 1
        record = {"cluster": target.cluster, "user": target.login.user, "host": target.login.host, "port": target.login.port,
                  "auth": target.auth, "opened_at": time.time(), "expires_at": expires, "opened_by": opened_by}
        write_json(self.record_path, record)

    def forget(self) -> None:
        """Drop what a master that is gone left behind (a stale socket, its record)."""
        for path in (self.paths.socket, self.record_path):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    def close(self) -> bool:
        """Stop the master (`ssh -O exit`); True if one was running. Jobs on the cluster are not touched."""
        running = False
        if os.path.exists(self.paths.socket):
            self.write_config()
            running = subprocess.run(self.ssh("-O", "exit", self.alias), capture_output=True, timeout=30).returncode == 0
        self.forget()
        return running


def refusal(target: SSHTarget, text: str) -> TransportError:
    """OpenSSH's error output turned into our errors: what happened, and what to do."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    hop = f"{target.login.user}@{target.login.host}:{target.login.port}"
    detail = "; ".join(lines[-3:]) or "ssh exited without a message"
    lower = text.lower()
    if "host key verification failed" in lower or "revoked" in lower:
        return _host_key_refusal(target, text)
    if "permission denied" in lower or "too many authentication failures" in lower:
        what = "password or one-time code" if target.auth == "password_otp" else "key or certificate"
        fix = (f"run `hpc login {target.cluster}` again with a fresh code" if target.auth == "password_otp"
               else "check ssh.key_file / ssh.certificate_file and that the user is right")
        return TransportError(f"authentication as {target.login.user} on {target.login.host}:{target.login.port} failed: "
                              f"{target.cluster} refused the {what} ({detail}); {fix}")
    return ContactLost(f"cannot open an SSH session to {hop}: {detail}")


def _host_key_refusal(target: SSHTarget, text: str) -> TransportError:
    host = re.search(r"(?:for|key for) (\[[^\]]+\]:\d+|[A-Za-z0-9.:-]+)(?: has changed| and you| was revoked)", text)
    where = host.group(1) if host else f"{target.login.host}:{target.login.port}"
    plain, _, port = where.strip("[").partition("]:")
    pin = f"ssh-keyscan -p {port or 22} {plain} >> {target.known_hosts}"
    fingerprint = re.search(r"SHA256:[A-Za-z0-9+/=]+", text)
    offending = re.search(r"Offending \S+ key in (\S+)", text)
    if "has changed" in text or "IDENTIFICATION HAS CHANGED" in text:
        return TransportError(
            f"the host key {fingerprint.group(0) if fingerprint else ''} that {where} presented does not match "
            f"{offending.group(1) if offending else target.known_hosts}: refusing to connect (a re-installed login node, "
            f"or someone in between). Compare the fingerprint with the one the site publishes; if it is theirs, replace "
            f"the line: ssh-keygen -f {target.known_hosts} -R '{where}' && {pin}")
    if "revoked" in text.lower():
        return TransportError(f"refusing a revoked host key for {where} ({target.known_hosts} marks it @revoked); "
                              "ask the site which key is current")
    return TransportError(f"refusing an unknown host key for {where}: {target.known_hosts} has no key or @cert-authority "
                          f"line for it. Verify the key out of band, then pin it: {pin}")


def close_all(directory: Path) -> int:
    """Stop every master with a socket in `directory` (tests, `hpc logout --all`); how many answered."""
    stopped = 0
    for config in directory.glob("*.ssh_config"):
        name = config.name[: -len(".ssh_config")]
        socket = directory / f"{name}.sock"
        if socket.exists():
            alias = next((line.split()[1] for line in config.read_text().splitlines() if line.startswith("Host ") and "-jump" not in line
                          and len(line.split()) == 2), None)
            if alias and subprocess.run(["ssh", "-F", str(config), "-O", "exit", alias], capture_output=True, timeout=30).returncode == 0:
                stopped += 1
        for leftover in (socket, directory / f"{name}.json"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(leftover)
    return stopped
