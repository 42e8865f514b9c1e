"""`hpc doctor <cluster>`: preflight a cluster profile before the first job, one line per check.

Checks are data: `CHECKS` is an ordered list of `Check(name, fn, needs)`. The runner calls each
`fn(ctx)`, which returns CheckResults (a check may report several lines, e.g. one per partition
class). A check whose `needs` did not all pass is reported as skipped, never run; an exception in
a check becomes a ✗ line, never a traceback. Every remote command is time-bound (`ctx.run`).

Order: profile, certificate, host key + authentication, storage (base and data dir), quota,
account, partition classes, modules, then checks added with `including` (the job environment
check of doctor_env, which needs the project's workloads), then with --submit a no-op test job per
partition class.

Reusable pieces: `doctor_site.check_modules(run, modules)` loads a list of modules on the login node.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import paramiko

from components.core import doctor_site, doctor_slurm
from components.core import known_hosts as kh
from components.core.doctor_report import CheckResult, duration, failed, one_line, passed, skipped
from components.core.errors import ConfigError
from components.core.profiles import ClusterProfile, load_profile
from components.core.ssh import (
    CommandResult, ContactLost, KnownHostsPolicy, NoSession, SSHTarget, Transport, TransportError, presented_certificate, target_for, transport_for,
)
from components.core.ssh_auth import certificate_validity, check_certificate

COMMAND_TIMEOUT_S = 60.0
SUBMIT_WAIT_S = 120.0
CERT_MIN_LEFT_S = 3600
RENEW_FIX = "renew it (for step-ca: step ssh certificate <email> <key> --provisioner <name>), then retry"


@dataclass
class Context:
    """What the checks share: the profile, the connection, facts gathered once, results so far."""

    project_root: Path
    cluster: str
    submit: bool = False
    submit_wait_s: float = SUBMIT_WAIT_S
    command_timeout_s: float = COMMAND_TIMEOUT_S
    profile: ClusterProfile | None = None
    target: SSHTarget | None = None
    transport: Transport | None = None
    facts: dict = field(default_factory=dict)
    results: list[CheckResult] = field(default_factory=list)
    stop: bool = False  # set by a check when nothing after it applies (a local profile)
    ran: set[str] = field(default_factory=set)  # checks that ran (were not skipped)

    def ok(self, name: str) -> bool:
        """Did the check or line `name` pass? A check that ran and reported nothing did not apply: it passed."""
        mine = [r for r in self.results if name in (r.group, r.check)]
        return all(r.ok for r in mine) if mine else name in self.ran

    def run(self, command: str, timeout: float | None = None) -> CommandResult:
        """Run on the login node, bounded in time; a non-zero exit is returned, not raised."""
        assert self.transport is not None
        return self.transport.run(command, check=False, timeout=timeout or self.command_timeout_s)


@dataclass(frozen=True)
class Check:
    name: str
    fn: Callable[[Context], Iterable[CheckResult]]
    needs: tuple[str, ...] = ()
    submit_only: bool = False
    lines: tuple[str, ...] = ()  # the lines it reports under other names; each is shown skipped with it


# --- profile, certificate, connection ----------------------------------------------------------

def check_profile(ctx: Context) -> list[CheckResult]:
    profile = ctx.profile = load_profile(ctx.cluster, ctx.project_root / "clusters")
    files = sorted({_relative(file, ctx.project_root) for file, _line in profile.origins.values()})
    where = ", ".join(files) or f"clusters/{ctx.cluster}.yaml"
    if profile.scheduler == "local":
        ctx.stop = True
        return [passed("profile", f"{profile.name} ({where}) runs jobs on this machine: nothing remote to check")]
    ctx.target = target = target_for(profile)
    if target.key_file and not os.path.isfile(target.key_file):
        return [failed("profile", f"ssh.key_file {target.key_file} does not exist here ({profile.source('ssh', 'key_file')})",
                       "create the key (ssh-keygen -t ed25519) and register it with the site, or correct ssh.key_file")]
    ctx.transport = transport_for(target)
    hops = "".join(f" via {h.user}@{h.host}:{h.port}" for h in target.jumps)
    return [passed("profile", f"{profile.name} ({where}): Slurm at {target.login.user}@{target.login.host}:{target.login.port}{hops}")]


def check_certificate_validity(ctx: Context) -> list[CheckResult]:
    target = ctx.target
    assert target is not None
    if target.auth != "certificate":
        return []
    if not target.certificate_file:
        return [failed("certificate", "ssh.auth is certificate but ssh.certificate_file is not set",
                       "set ssh.certificate_file to the signed <key>-cert.pub")]
    cert = target.certificate_file
    try:
        check_certificate(cert)  # expired or not yet valid: its own message and renewal command
        valid_after, valid_before = certificate_validity(cert)
    except ConfigError as exc:
        return [failed("certificate", exc.problem, exc.fix or RENEW_FIX)]
    except OSError as exc:
        return [failed("certificate", f"cannot read {cert}: {exc.strerror or exc}", "get a certificate, or correct ssh.certificate_file")]
    left = valid_before - time.time()
    until = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(valid_before))
    if left < CERT_MIN_LEFT_S:
        return [failed("certificate", f"{cert} expires in {duration(left)} (at {until}): a job started now may outlive it", RENEW_FIX)]
    return [passed("certificate", f"{cert} valid for {duration(left)} more (until {until})")]


def describe_host_key(key: paramiko.PKey) -> str:
    """`<type> SHA256:...` as `ssh-keygen -lf` prints it; for a host certificate also its type and signing CA."""
    shown = f"{key.get_name()} {kh.fingerprint(key.asbytes())}"
    try:
        cert = kh.parse_certificate(presented_certificate(key) or b"")
    except ValueError:  # no certificate (or an unreadable one): the plain key says it all
        return shown
    return f"a {cert.key_type} host certificate for {shown}, signed by CA {kh.fingerprint(cert.ca_key)}"


def _verify_hint(host: str) -> str:
    return (f"compare it with the fingerprint {host}'s operators publish, or with `ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` "
            "run on the login node over a path you trust (a console, or another network)")


def presented_key(policy: KnownHostsPolicy, timeout: float) -> paramiko.PKey | None:
    """The key the login node presents, read by a bare key exchange (no login) that asks for the key types
    known_hosts expects, as the real connection does; None via jump hosts or on any error."""
    if policy.target.jumps:
        return None
    try:
        sock = socket.create_connection((policy.hop.host, policy.hop.port), timeout)
    except OSError:
        return None
    transport = policy.transport(sock)
    try:
        transport.start_client(timeout=timeout)
        return transport.get_remote_server_key()
    except Exception:  # noqa: BLE001 - a fingerprint is a courtesy in an error message
        return None
    finally:
        transport.close()


def host_key_result(policy: KnownHostsPolicy, key: paramiko.PKey | None, refusal: str = "") -> CheckResult:
    """The 'host key' line: the key presented, and the known_hosts line that vouched for it (or why none did).
    `refusal` is the connection's own message when it refused the host key."""
    target, hop = policy.target, policy.hop
    pin_fix = (f"{_verify_hint(hop.host)}; then put that key in {target.known_hosts} as "
               f"'{kh.lookup_name(hop.host, hop.port)} <type> <key>' (ssh-keyscan -p {hop.port} {hop.host} prints it)")
    if key is None:
        return failed("host key", refusal, pin_fix) if refusal else passed("host key", f"{hop.host}:{hop.port}: key accepted")
    verdict, presents = policy.verdict(key), f"{hop.host}:{hop.port} presents {describe_host_key(key)}"
    if verdict.accepted and not refusal:
        return passed("host key", f"{presents}, {verdict.reason}; to verify it out of band, {_verify_hint(hop.host)}")
    if verdict.kind == "revoked":
        pin_fix = f"do not use this host until its operators confirm a new key; {pin_fix}"
    return failed("host key", f"{refusal or policy.refusal(verdict)} [{presents}]", pin_fix)


def check_connection(ctx: Context) -> list[CheckResult]:
    """The 'host key' and 'authentication' lines: one command through the cluster's transport (its
    session, opened here for keys and certificates), and the key the login node presents, read by a
    bare key exchange to say which known_hosts line vouched for it."""
    target, transport = ctx.target, ctx.transport
    assert target is not None and transport is not None
    hop = target.login
    policy = KnownHostsPolicy(target, hop)
    try:
        echo = transport.run("echo hpc-doctor", check=False, timeout=ctx.command_timeout_s)
    except ConfigError as exc:
        if not ctx.ok("certificate"):
            return [skipped("host key", "certificate"), skipped("authentication", "certificate")]
        return [failed("host key", f"cannot connect: {exc.problem}", exc.fix), skipped("authentication", "host key")]
    except NoSession as exc:
        return [host_key_result(policy, presented_key(policy, target.connect_timeout_s)),
                failed("authentication", str(exc), f"hpc login {target.cluster}, then re-run hpc doctor {target.cluster}")]
    except ContactLost as exc:
        return [failed("host key", f"cannot reach the login node to read its key: {exc}",
                       f"check ssh.host/ssh.port ({hop.host}:{hop.port}), VPN and jump hosts, then retry"),
                skipped("authentication", "host key")]
    except TransportError as exc:
        message = str(exc)
        key = presented_key(policy, target.connect_timeout_s)
        if "host key" in message.lower():
            return [host_key_result(policy, key, refusal=message), skipped("authentication", "host key")]
        return [host_key_result(policy, key), failed("authentication", message, _auth_fix(target))]
    results = [host_key_result(policy, presented_key(policy, target.connect_timeout_s))]
    if echo.exit_code != 0 or echo.stdout.strip() != "hpc-doctor":
        results.append(failed("authentication", f"logged in as {hop.user}, but a command did not run: {one_line(echo.stderr) or echo.exit_code}",
                              "check the account's login shell and shell start-up files on the cluster"))
    else:
        results.append(passed("authentication", f"as {hop.user} {_auth_method(target)}"))
    return results


def _auth_method(target: SSHTarget) -> str:
    if target.auth == "password_otp":
        return "with password + one-time code"
    if target.auth == "certificate" and target.certificate_file:
        return f"with certificate {target.certificate_file}"
    return f"with key {target.key_file}" if target.key_file else "with a key from the SSH agent"


def _auth_fix(target: SSHTarget) -> str:
    if target.auth == "password_otp":
        return "check the password and one-time code (password_env/otp_env) and ssh.user"
    if target.auth == "certificate":
        return f"check that {target.certificate_file} is signed for {target.login.user} by the site's CA; {RENEW_FIX}"
    return (f"check ssh.user ({target.login.user}) and that the public half of {target.key_file or 'your agent key'} "
            "is registered with the site (~/.ssh/authorized_keys on the cluster, or the site's key portal)")


def _relative(path: Path, root: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)


# --- the registry -----------------------------------------------------------------------------

CHECKS: list[Check] = [
    Check("profile", check_profile),
    Check("certificate", check_certificate_validity, needs=("profile",)),
    Check("connection", check_connection, needs=("profile",), lines=("host key", "authentication")),
    Check("storage", doctor_site.check_storage, needs=("authentication",), lines=("base dir", "data dir")),
    Check("quota", doctor_site.check_quota, needs=("authentication",)),
    Check("account", doctor_slurm.check_account, needs=("authentication",)),
    Check("partition classes", doctor_slurm.check_partition_classes, needs=("authentication",)),
    Check("modules", doctor_site.check_profile_modules, needs=("authentication",)),
    # `including` adds checks here (the job environment), before the --submit checks.
    Check("test jobs", doctor_slurm.check_test_jobs, needs=("authentication", "account"), submit_only=True),
]


def including(*extra: Check, checks: list[Check] | None = None) -> list[Check]:
    """`checks` (default CHECKS) with `extra` after the read-only ones, before the --submit checks."""
    base = list(CHECKS if checks is None else checks)
    index = next((i for i, c in enumerate(base) if c.submit_only), len(base))
    return [*base[:index], *extra, *base[index:]]


def diagnose(cluster: str, project_root: Path, *, submit: bool = False, submit_wait_s: float = SUBMIT_WAIT_S,
             checks: list[Check] | None = None) -> list[CheckResult]:
    """Run every check against `cluster` and return one result per line, in order."""
    ctx = Context(Path(project_root), cluster, submit=submit, submit_wait_s=submit_wait_s)
    try:
        for check in checks if checks is not None else CHECKS:
            if ctx.stop:
                break
            if check.submit_only and not submit:
                continue
            missing = next((n for n in check.needs if not ctx.ok(n)), None)
            if missing:
                results = [skipped(line, missing) for line in check.lines or (check.name,)]
            else:
                ctx.ran.add(check.name)
                results = _run_check(check, ctx)
            ctx.results.extend(CheckResult(r.check, r.ok, r.detail, r.fix, check.name) for r in results)
    finally:
        if ctx.transport is not None:
            ctx.transport.close()  # the next doctor run verifies host key and login afresh
    return ctx.results


def _run_check(check: Check, ctx: Context) -> list[CheckResult]:
    try:
        return list(check.fn(ctx))
    except ConfigError as exc:
        return [failed(check.name, exc.problem if exc.location.file is None else str(exc).split("\n")[0], exc.fix)]
    except ContactLost as exc:
        return [failed(check.name, f"lost contact with the login node: {exc}", "re-run hpc doctor when the cluster answers again")]
    except TransportError as exc:
        return [failed(check.name, one_line(str(exc)), "see the message; re-run hpc doctor after fixing it")]
    except Exception as exc:  # noqa: BLE001 - the report must come out whatever a check does
        return [failed(check.name, f"the check itself failed: {type(exc).__name__}: {exc}",
                       "report this with the output of hpc doctor --json")]
