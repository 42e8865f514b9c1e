"""The OpenSSH client configuration of one cluster session, written from its profile's ssh section.

Every line comes from a profile key or from a rule stated here, so a user can read the file, and
use it: `ssh -F <file> hpc-<cluster>` opens a shell through the same session. Values are checked
before they are written: a host, user or path that could add a directive, a token or a second
word is refused, naming the key.

Sources: ssh_config(5) of OpenSSH 9.2 (ControlMaster/ControlPersist, ProxyJump, the `%` tokens of
IdentityFile, CertificateFile, UserKnownHostsFile and ControlPath).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from components.core.errors import ConfigError
from components.core.ssh_target import SSHTarget

# Host names, IPv4 and bracket-less IPv6 addresses; nothing a shell or ssh_config would read twice.
_HOST = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._:-]{0,252})$")
_USER = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,63}$")
ALIAS_PREFIX = "hpc-"


@dataclass(frozen=True)
class SessionPaths:
    """Where a session's files are on this machine (all inside one 0700 directory)."""

    config: str
    socket: str
    log: str


def alias(cluster: str, jump: int | None = None) -> str:
    """The Host name the config gives the login node (`hpc-vsc5`) or its jump hosts (`hpc-vsc5-jump0`)."""
    base = ALIAS_PREFIX + cluster
    return base if jump is None else f"{base}-jump{jump}"


def _host(value: str, key: str, cluster: str) -> str:
    if not _HOST.match(value) or ".." in value:
        raise ConfigError(f"{key} {value!r} of cluster {cluster!r} is not a host name or address",
                          fix=f"set {key} to a name such as login.example.org or an address such as 10.0.0.1")
    return value


def _user(value: str, key: str, cluster: str) -> str:
    if not _USER.match(value):
        raise ConfigError(f"{key} {value!r} of cluster {cluster!r} is not a login name (letters, digits, . _ -)",
                          fix="set the remote user name exactly as the site gave it")
    return value


def _path(value: str, key: str, cluster: str) -> str:
    """A path as one ssh_config word: double-quoted, `%` escaped (ssh would expand tokens)."""
    if any(ch in value for ch in '"\n\r\t\0') or not value.isprintable():
        raise ConfigError(f"{key} {value!r} of cluster {cluster!r} holds a quote or a control character",
                          fix=f"move the file to a path without them and point {key} at it")
    return '"' + value.replace("%", "%%") + '"'


def render(target: SSHTarget, paths: SessionPaths, *, lifetime_s: int) -> str:
    """The ssh_config text for `target`; `lifetime_s` bounds an idle master (ControlPersist, seconds).

    Raises ConfigError for a host, user or path that cannot be written safely.
    """
    cluster = target.cluster
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", cluster):
        raise ConfigError(f"cluster name {cluster!r} cannot name an SSH session", fix="rename clusters/<name>.yaml to letters, digits, . _ -")
    hops = [*target.jumps, target.login]
    names = [alias(cluster, i) for i in range(len(target.jumps))] + [alias(cluster)]
    lines = [f"# Written by `hpc` for cluster {cluster} from its profile's ssh section; regenerated on every login.",
             f"# Open a shell through the session: ssh -F {paths.config} {alias(cluster)}", ""]
    for index, (hop, name) in enumerate(zip(hops, names)):
        key = "ssh" if index == len(target.jumps) else f"ssh.jump_hosts[{index}]"
        lines += [f"Host {name}",
                  f"  HostName {_host(hop.host, key + '.host', cluster)}",
                  f"  Port {int(hop.port)}",
                  f"  User {_user(hop.user, key + '.user', cluster)}"]
        if index:
            lines.append(f"  ProxyJump {names[index - 1]}")
        if index == len(target.jumps):
            # Only the login node is multiplexed: the jump hops live inside the master's connection.
            lines += [f"  ControlPath {_path(paths.socket, 'session directory', cluster)}",
                      f"  ControlPersist {int(lifetime_s)}s"]
    lines += [f"Host {' '.join(names)}",
              # Strict checking against the profile's known_hosts only; OpenSSH honours its
              # @cert-authority and @revoked lines itself.
              f"  UserKnownHostsFile {_path(target.known_hosts, 'ssh.known_hosts', cluster)}",
              "  GlobalKnownHostsFile /dev/null",
              "  StrictHostKeyChecking yes",
              "  UpdateHostKeys no",
              "  CheckHostIP no",
              f"  ConnectTimeout {max(1, int(target.connect_timeout_s))}",
              f"  ServerAliveInterval {target.keepalive_s or 60}",
              "  ServerAliveCountMax 3",
              "  ForwardAgent no",
              "  ForwardX11 no",
              "  RequestTTY no",
              "  LogLevel ERROR"]
    if target.auth == "password_otp":
        lines += ["  PreferredAuthentications keyboard-interactive,password", "  PubkeyAuthentication no"]
    else:
        lines += ["  PreferredAuthentications publickey", "  KbdInteractiveAuthentication no", "  PasswordAuthentication no"]
        if target.key_file:
            lines += [f"  IdentityFile {_path(target.key_file, 'ssh.key_file', cluster)}", "  IdentitiesOnly yes"]
        if target.auth == "certificate" and target.certificate_file:
            lines.append(f"  CertificateFile {_path(target.certificate_file, 'ssh.certificate_file', cluster)}")
    return "\n".join(lines) + "\n"
