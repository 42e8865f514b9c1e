"""`hpc login`, `hpc login --status`, `hpc logout`: the per-cluster SSH session every step uses.

    hpc login vsc5            # password + one-time code, typed once; every run on this machine uses it
    hpc login --status        # every cluster's session: open or not, and for how long still
    hpc logout vsc5           # end it (jobs on the cluster are not touched)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from components.core.errors import ConfigError
from components.core.profiles import available_profiles, load_profile
from components.core.session import Session, SessionState
from components.core.ssh_target import target_for
from components.core.units import format_time

# A session with less than this left is reported as expiring (seconds): a job started now may outlive it.
EXPIRY_WARNING_S = 2 * 3600


def _session(name: str, project_root: Path) -> Session:
    from components.cli import _check_profile_name

    clusters_dir = project_root / "clusters"
    _check_profile_name(name, clusters_dir, "hpc login")
    profile = load_profile(name, clusters_dir)
    if profile.ssh is None:
        raise ConfigError(f"cluster {name!r} runs jobs on this machine: there is nothing to log in to", location=profile.location())
    if profile.ssh.session == "process":
        raise ConfigError(f"cluster {name!r} has ssh.session: process: every process logs in on its own, there is no "
                          "session to open", fix=f"set ssh.session: shared in clusters/{name}.yaml to use `hpc login`")
    return Session(target_for(profile))


def describe(state: SessionState, now: float | None = None) -> str:
    """One line on a session: open until when, or not open, and what to do."""
    now = time.time() if now is None else now
    if not state.alive:
        return f"{state.cluster}: no session"
    left = state.remaining_s(now)
    until = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(state.expires_at)) if state.expires_at else "its end"
    line = f"{state.cluster}: session open until {until} ({format_time(int(left or 0))} left, opened by {state.opened_by})"
    if left is not None and left < EXPIRY_WARNING_S:
        line += f"; expiring: run `hpc login {state.cluster} --renew` before starting long runs"
    return line


def cmd_login(args: argparse.Namespace, project_root: Path) -> int:
    if args.status:
        names = [args.cluster] if args.cluster else _remote_profiles(project_root)
        for name in names:
            print(describe(_session(name, project_root).state()))
        return 0
    if not args.cluster:
        raise ConfigError("hpc login needs the cluster to log in to", fix="hpc login <cluster>, e.g. hpc login vsc5")
    session = _session(args.cluster, project_root)
    target = session.target
    with session.locked():
        if session.alive() and session.expired() is None and not args.renew:
            print(describe(session.state()) + "; nothing to do (--renew opens a fresh one)")
            return 0
        session.close()
        interactive = sys.stdin.isatty()
        if target.auth == "password_otp" and not interactive and not session.env_secrets():
            raise ConfigError(
                f"hpc login {args.cluster} asks for a password and a one-time code, and this is not a terminal",
                fix=f"run it in a terminal, or export ${target.password_env or '<password_env>'} and "
                    f"${target.otp_env or '<otp_env>'} (ssh.password_env / ssh.otp_env of the profile)")
        hop = f"{target.login.user}@{target.login.host}:{target.login.port}"
        if interactive and target.auth == "password_otp":
            print(f"Logging in to {args.cluster} as {hop}: OpenSSH asks for your password and one-time code; "
                  "neither is stored.", file=sys.stderr)
        session.open(interactive=interactive, opened_by="hpc login")
    print(describe(session.state()))
    print(f"Every step, run, schedule and sensor on this machine uses it. A shell through it: "
          f"ssh -F {session.paths.config} {session.alias}")
    return 0


def cmd_logout(args: argparse.Namespace, project_root: Path) -> int:
    names = _remote_profiles(project_root) if args.all else [args.cluster]
    if not args.all and not args.cluster:
        raise ConfigError("hpc logout needs the cluster (or --all)", fix="hpc logout <cluster>")
    for name in names:
        ended = _session(name, project_root).close()
        print(f"{name}: session ended" if ended else f"{name}: no session was open")
    return 0


def _remote_profiles(project_root: Path) -> list[str]:
    names = []
    for name in available_profiles(project_root / "clusters"):
        try:
            profile = load_profile(name, project_root / "clusters")
            if profile.ssh is not None and profile.ssh.session == "shared":
                target_for(profile)  # a profile whose user is not set here has no session here either
                names.append(name)
        except ConfigError:
            continue
    return names


def add_parsers(sub) -> None:
    """The login and logout subcommands of `hpc`."""
    login = sub.add_parser("login", help="open the SSH session every step uses (asks for password + OTP once)")
    login.add_argument("cluster", nargs="?", help="profile name, e.g. vsc5")
    login.add_argument("--status", action="store_true", help="say whether each session is open and for how long still")
    login.add_argument("--renew", action="store_true", help="end an open session and log in afresh")
    login.set_defaults(func=cmd_login)
    logout = sub.add_parser("logout", help="end a cluster's SSH session (running jobs are not touched)")
    logout.add_argument("cluster", nargs="?", help="profile name")
    logout.add_argument("--all", action="store_true", help="end the sessions of every cluster")
    logout.set_defaults(func=cmd_logout)
