"""The test cluster's OTP login node (sshd-otp, 127.0.0.1:2224 by default): its password and TOTP
secret, one-time codes from the real `oathtool`, and a password + code login with the plain `ssh`
client on a pseudo-terminal, as a person types it.

The node asks through PAM keyboard-interactive, one prompt per round:
"Password: " (pam_unix), then "One-time password (OATH) for `USER': " (pam_oath); OpenSSH's client
shows each as "(USER@HOST) <prompt>". pam_oath records the last code it accepted in
/etc/users.oath and refuses that code again, and any code of an earlier 30 s step (so a code
from a later step, accepted early, blocks the current one): use `fresh_otp_code` for a login that
must succeed; it waits for the next step when needed.
"""

from __future__ import annotations

import os
import re
import select
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.integration.logs import LogMark

__all__ = [
    "LogMark", "OTPLogin", "OTPNode", "answer_prompts", "count_in_log", "fresh_otp_code", "last_used_code", "otp_code",
    "otp_env", "otp_login", "sshd_log",
]

STEP_S = 30
OATH_USERS = Path("/etc/users.oath")
PASSWORD_PROMPT = "Password: "
OTP_PROMPT_START = "One-time password (OATH) for "


@dataclass(frozen=True)
class OTPNode:
    """Where and how to log in: port, user, password, TOTP secret (hex) and the known_hosts file."""

    host: str
    port: int
    user: str
    password: str
    secret: str
    known_hosts: Path


def default_state_dir() -> Path:
    """$HPC_TEST_STATE_DIR, else $HPC_TEST_CLUSTER_DIR/state, as scripts/test-cluster.sh picks it."""
    if os.environ.get("HPC_TEST_STATE_DIR"):
        return Path(os.environ["HPC_TEST_STATE_DIR"])
    cluster = os.environ.get("HPC_TEST_CLUSTER_DIR") or f"{os.environ.get('TMPDIR', '/tmp')}/hpc-test-cluster"
    return Path(cluster) / "state"


def sshd_log(name: str, state_dir: Path | None = None) -> Path:
    """The log of sshd-<name> ('otp', 'login', 'jump'): <state>/log/sshd-<name>.log."""
    return Path(state_dir or default_state_dir()) / "log" / f"sshd-{name}.log"


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError as exc:
        raise RuntimeError(f"{path}: {exc.strerror}; run `bash scripts/test-cluster.sh up` (as root)") from exc


def otp_env(state_dir: Path | None = None) -> OTPNode:
    """The OTP node's details from the state files `up` wrote (<state>/otp/password and secret, both
    0600: reading them needs root) and the environment of env.sh for port, user and known_hosts.
    Raises RuntimeError naming the missing file."""
    state = Path(state_dir or default_state_dir())
    cluster = Path(os.environ.get("HPC_TEST_CLUSTER_DIR") or state.parent)
    return OTPNode(
        host=os.environ.get("HPC_TEST_SSH_HOST", "127.0.0.1"),
        port=int(os.environ.get("HPC_TEST_OTP_PORT", "2224")),
        user=os.environ.get("HPC_TEST_USER", "slurmuser"),
        password=_read(state / "otp" / "password"),
        secret=_read(state / "otp" / "secret"),
        known_hosts=Path(os.environ.get("HPC_TEST_KNOWN_HOSTS") or cluster / "ssh" / "known_hosts"),
    )


def otp_code(state_dir: Path | None = None, offset_steps: int = 0, at: float | None = None) -> str:
    """The 6-digit TOTP code of `offset_steps` 30 s steps after `at` (epoch seconds, default now),
    computed by `oathtool --totp -d 6`. Raises RuntimeError when oathtool fails."""
    secret = otp_env(state_dir).secret
    when = int((time.time() if at is None else at) + offset_steps * STEP_S)
    proc = subprocess.run(["oathtool", "--totp", "-d", "6", "-N", f"@{when}", secret],
                          capture_output=True, text=True, timeout=10)
    if proc.returncode != 0 or not re.fullmatch(r"\d{6}", proc.stdout.strip()):
        raise RuntimeError(f"oathtool failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout.strip()


def last_used_code(user: str | None = None) -> str | None:
    """The code pam_oath last accepted for `user` (None when none yet): field 6 of its line in
    /etc/users.oath, which it rewrites as 'HOTP/T30 USER - SECRET N CODE TIME'. Needs root."""
    user = user or os.environ.get("HPC_TEST_USER", "slurmuser")
    for line in _read(OATH_USERS).splitlines():
        fields = line.split()
        if len(fields) >= 6 and fields[1] == user:
            return fields[5]
    return None


def fresh_otp_code(state_dir: Path | None = None, max_wait_s: float = 95) -> str:
    """The current code, once pam_oath would take it: if the last accepted code is this step's or a
    later one (the node takes codes up to 10 steps ahead, window=20), sleep until the step after it
    starts. Raises RuntimeError when that is more than `max_wait_s` seconds away."""
    node = otp_env(state_dir)
    last = last_used_code(node.user)
    now = time.time()
    ahead = [k for k in range(0, 11) if last is not None and otp_code(state_dir, k, now) == last]
    if ahead:
        wait = (int(now) // STEP_S + ahead[0] + 1) * STEP_S - now + 0.2
        if wait > max_wait_s:
            raise RuntimeError(f"{OATH_USERS}: the last accepted code is {ahead[0]} steps ahead; wait {wait:.0f}s")
        time.sleep(wait)
    return otp_code(state_dir)


def count_in_log(path: Path, needle: str, since_bytes: int = 0) -> int:
    """Lines containing `needle` written to `path` after its first `since_bytes` bytes (0 if absent)."""
    if not Path(path).exists():
        return 0
    with open(path, "rb") as log:
        log.seek(since_bytes)
        return sum(needle in line for line in log.read().decode(errors="replace").splitlines())


@dataclass
class OTPLogin:
    """What one `otp_login` saw: ssh's exit status, all terminal output, and the prompts answered."""

    returncode: int
    output: str
    prompts: list[str] = field(default_factory=list)


def otp_login(node: OTPNode, password: str, code: str, command: str = "echo ok",
              timeout_s: float = 30, extra_ssh_args: tuple[str, ...] = ()) -> OTPLogin:
    """Run `ssh -p PORT USER@HOST COMMAND` on a new pseudo-terminal and answer its prompts (see
    `answer_prompts`) with `password` and `code`, each once."""
    args = ["ssh", "-p", str(node.port), "-o", f"UserKnownHostsFile={node.known_hosts}",
            "-o", "GlobalKnownHostsFile=/dev/null", "-o", "StrictHostKeyChecking=yes",
            "-o", "PubkeyAuthentication=no", "-o", "PreferredAuthentications=keyboard-interactive",
            "-o", "NumberOfPasswordPrompts=1", "-o", "ControlPath=none", "-F", "/dev/null",
            *extra_ssh_args, f"{node.user}@{node.host}", command]
    return answer_prompts(args, password, code, timeout_s=timeout_s)


def answer_prompts(argv: list[str], password: str, code: str, *, cwd: Path | None = None, env: dict | None = None,
                   timeout_s: float = 30) -> OTPLogin:
    """Run `argv` on a new pseudo-terminal that is its controlling terminal (ssh reads answers from
    /dev/tty, as a person types them) and answer "Password:" with `password` and the
    one-time-password prompt with `code`, each once: a second round of a prompt means the node
    refused (NumberOfPasswordPrompts=1 ends it). Raises TimeoutError after `timeout_s` seconds
    (the process is killed)."""
    primary, secondary = os.openpty()
    # setsid -c: a new session whose controlling terminal is the pty, so /dev/tty is ours.
    proc = subprocess.Popen(["setsid", "-w", "-c", *argv], stdin=secondary, stdout=secondary,
                            stderr=secondary, close_fds=True, cwd=cwd, env=env)
    os.close(secondary)
    out, answered, prompts = "", 0, []
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{argv[0]} still running after {timeout_s}s: {out[-500:]!r}")
            ready, _, _ = select.select([primary], [], [], min(left, 0.5))
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(primary, 4096).decode(errors="replace")
            except OSError:  # EIO: every holder of the pty has closed it
                break
            if not chunk:
                break
            out += chunk
            pending = out[answered:]
            if pending.rstrip().endswith("Password:") and OTP_PROMPT_START not in pending:
                prompts.append(pending.strip().splitlines()[-1])
                os.write(primary, password.encode() + b"\n")
                answered = len(out)
            elif OTP_PROMPT_START in pending and pending.rstrip().endswith(":"):
                prompts.append(pending.strip().splitlines()[-1])
                os.write(primary, code.encode() + b"\n")
                answered = len(out)
        returncode = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        os.close(primary)
    return OTPLogin(returncode, out.replace("\r\n", "\n"), prompts)
