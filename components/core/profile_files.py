"""Files on this machine that a profile's SSH connection needs: known_hosts, the key, the certificate.

A missing one does not make the profile invalid (nobody may connect from here yet), so `hpc clusters`
shows these as warnings, each at the profile line of its key with the way to get the file.
"""

from __future__ import annotations

import os
from pathlib import Path

from components.core import known_hosts as kh
from components.core.errors import ConfigError
from components.core.profile_models import ClusterProfile


def missing_files(profile: ClusterProfile) -> list[ConfigError]:
    """One ConfigError per file the profile's SSH settings name that is not a readable file here; [] without ssh."""
    ssh = profile.ssh
    if ssh is None or profile.scheduler != "slurm":
        return []
    hosts = [(ssh.host, ssh.port), *((j.host, j.port) for j in ssh.jump_hosts)]
    scans = "; ".join(f"ssh-keyscan -p {port} {host} >> {host}.keys" for host, port in hosts)
    wanted = [("known_hosts", ssh.known_hosts, "the host keys every connection is checked against",
               f"get the keys: {scans}; compare `ssh-keygen -lf <host>.keys` with the fingerprints the site publishes, "
               f"then append them to {ssh.known_hosts} (clusters/README.md, Host keys); or point ssh.known_hosts at the "
               f"site's file (entries look like '{kh.lookup_name(ssh.host, ssh.port)} <type> <key>')")]
    if ssh.key_file and ssh.auth in ("key", "certificate"):
        wanted.append(("key_file", ssh.key_file, "the private key to log in with",
                       "create one with `ssh-keygen -t ed25519 -f <path>` and register its .pub with the site, "
                       "or point ssh.key_file at your existing key"))
    if ssh.certificate_file and ssh.auth == "certificate":
        wanted.append(("certificate_file", ssh.certificate_file, "the SSH certificate the site signs for you",
                       "get a fresh certificate as the site documents (it expires), or point ssh.certificate_file at it"))
    problems = []
    for key, raw, role, fix in wanted:
        where = profile.location("ssh", key)
        path, unset = _expand(raw)
        if unset:
            problems.append(ConfigError(f"ssh.{key} {raw!r} ({role}) uses ${unset}, which is not set", location=where,
                                        fix=f"export {unset} before connecting (for the docker profile: source the test cluster's env.sh)"))
        elif not path.is_file():
            problems.append(ConfigError(f"ssh.{key} {raw} ({role}) does not exist on this machine", fix=fix, location=where))
        elif not os.access(path, os.R_OK):
            problems.append(ConfigError(f"ssh.{key} {raw} ({role}) is not readable", location=where,
                                        fix=f"make it readable by you: chmod u+r {path}"))
    return problems


def _expand(raw: str) -> tuple[Path, str | None]:
    """The path with ~ and $VARS expanded, and the first variable that is not set (None when all are)."""
    expanded = os.path.expandvars(raw)
    if "$" in expanded:
        name = expanded[expanded.index("$") + 1:].lstrip("{").split("/")[0].rstrip("}")
        return Path(expanded), name
    return Path(os.path.expanduser(expanded)), None
