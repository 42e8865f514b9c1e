"""The `hpc_sessions` sensor: in the UI, the SSH session of every cluster the code location's assets
run on, with its remaining lifetime; a warning ahead of expiry and when a password + OTP cluster has
no session (its runs would fail at once). It never logs in: `ssh -O check` on the control socket.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from components.core.errors import ConfigError
from components.core.profiles import load_profile

SENSOR_NAME = "hpc_sessions"
# Every 5 minutes: cheap (no login) and often enough to warn hours ahead of a 12 h expiry.
INTERVAL_S = 300


def used_clusters(defs: dg.Definitions) -> list[str]:
    """The clusters named by the assets' `hpc/cluster` op tag, sorted."""
    names = set()
    for assets_def in defs.assets or ():
        node = getattr(assets_def, "node_def", None)
        tag = (getattr(node, "tags", None) or {}).get("hpc/cluster")
        if tag:
            names.add(tag)
    return sorted(names)


def session_report(clusters: list[str], clusters_dir: Path) -> tuple[list[str], list[str]]:
    """(lines, warnings) for the shared sessions of `clusters`; local and per-process profiles are left out."""
    from components.cli_sessions import EXPIRY_WARNING_S, describe
    from components.core.session import Session
    from components.core.ssh_target import target_for

    lines, warnings = [], []
    for name in clusters:
        try:
            profile = load_profile(name, clusters_dir)
            if profile.ssh is None or profile.ssh.session != "shared":
                continue
            session = Session(target_for(profile))
            state = session.state()
        except (ConfigError, OSError) as exc:
            warnings.append(f"{name}: {exc}")
            continue
        line = describe(state)
        lines.append(line)
        left = state.remaining_s()
        if not state.alive and profile.ssh.auth == "password_otp":
            warnings.append(f"{line}: its runs fail until you run `hpc login {name}`")
        elif left is not None and left < EXPIRY_WARNING_S:
            warnings.append(line)
    return lines, warnings


def sessions_sensor(clusters: list[str], clusters_dir: Path) -> dg.SensorDefinition:
    """A sensor that launches nothing: each tick says how the sessions stand (its skip reason) and
    logs a warning for an expiring or missing OTP session."""

    @dg.sensor(name=SENSOR_NAME, minimum_interval_seconds=INTERVAL_S, default_status=dg.DefaultSensorStatus.RUNNING,
               description="SSH sessions of the clusters these assets run on: open or not, and for how long still "
                           "(`hpc login <cluster>` opens one). Launches no runs.")
    def _sensor(context: dg.SensorEvaluationContext):
        lines, warnings = session_report(clusters, clusters_dir)
        for warning in warnings:
            context.log.warning(warning)
        return dg.SkipReason("; ".join(warnings or lines) or "no cluster here uses a shared session")

    return _sensor


def with_sessions_sensor(defs: dg.Definitions, project_root: Path) -> dg.Definitions:
    """`defs` plus the sensor when some asset runs on a cluster with a shared session; else `defs`."""
    clusters_dir = project_root / "clusters"
    remote = []
    for name in used_clusters(defs):
        try:
            profile = load_profile(name, clusters_dir)
        except ConfigError:
            continue  # the asset's own load reports a broken profile
        if profile.ssh is not None and profile.ssh.session == "shared":
            remote.append(name)
    if not remote:
        return defs
    return dg.Definitions.merge(defs, dg.Definitions(sensors=[sessions_sensor(remote, clusters_dir)]))
