"""What one shared SSH session per cluster saves over one SSH connection per step process, on the test cluster.

    bash scripts/test-cluster.sh up        # once; the bench reads /tmp/hpc-test-cluster/env.sh itself
    .venv/bin/python bench/ssh_sessions.py [--runs 3] [--assets 50] [--max-concurrent 8]

The workload is what a user launches: 50 no-op assets (each a SlurmAssetComponent on the `docker` cluster;
the script opens Dagster Pipes and reports one materialization; resources time 00:02:00), materialized by
ONE `dg launch --assets a,b,...` through the default multiprocess executor with max_concurrent 8, so
8 step processes talk to the cluster at once. Two variants, side by side in the same bench run, each in its
own project copy with its own DAGSTER_HOME:

- per-process: clusters/overrides/docker.yaml sets `ssh: {session: process}` (one paramiko connection
  per step process, the behaviour before shared sessions);
- shared: the default `ssh.session: shared` (one OpenSSH ControlMaster per cluster). Its sessions live in
  a private $HPC_SESSION_DIR, closed before every run so the run's own login is counted, and after the
  last one so the bench leaves no master running.

Runs alternate (per-process, shared, shared, per-process, ...), so a slow minute on the shared machine
hurts both. Per run it records:

- logins: new "Accepted publickey" lines in the test sshd's log (LogLevel VERBOSE), only those from the
  client ports of this bench's own connections (see OurConnections), since others' tests share the sshd;
- commands: new "Starting session: command" lines on those connections (every remote command);
- squeue: the controller's own RPC counts (`sdiag`, as root): squeue -j <one id> is REQUEST_JOB_INFO_SINGLE,
  squeue -j <several> is REQUEST_JOB_INFO, squeue --me is REQUEST_JOB_USER_INFO (Slurm 22.05); their sum;
- sacct: slurmdbd's DBD_GET_JOBS_COND count (`sacctmgr show stats`), one per sacct call;
- wall: seconds of the `dg launch` command; and per-minute rates of the counts (count / wall minutes);
- peak SSH: most of this bench's TCP connections to the login port open at once (sampled every 0.2 s);
- others' logins: logins in the same window from other processes: when not 0, someone else used the
  cluster meanwhile and the squeue/sacct counts (which cannot be told apart by process) include theirs.

Slurm counters are read before and after each run, never reset, so others' measurements are not
disturbed; a controller restart in between voids that run's Slurm counts (shown as n/a). Prints a markdown table of
medians with the ratio shared / per-process.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from components.core.session import close_all  # noqa: E402
from tests.conftest import copy_project  # noqa: E402
from tests.integration.logs import LogMark  # noqa: E402

ENV_SH = Path("/tmp/hpc-test-cluster/env.sh")
NOOP = textwrap.dedent("""\
    from dagster_pipes import open_dagster_pipes

    with open_dagster_pipes() as pipes:
        pipes.report_asset_materialization(metadata={"rows": 0})
    """)
INSTANCE = "telemetry:\n  enabled: false\n"
SQUEUE_RPCS = ("REQUEST_JOB_INFO", "REQUEST_JOB_INFO_SINGLE", "REQUEST_JOB_USER_INFO")
SACCT_RPC = "DBD_GET_JOBS_COND"
VARIANTS = ("per-process", "shared")
MEASURES = ("wall_s", "logins", "commands", "squeue", "sacct", "peak_ssh", "others_logins")
PER_MINUTE = ("logins", "commands", "squeue", "sacct")


# -- parsing (unit-tested in tests/test_bench_ssh_sessions.py) ------------------------------------
def parse_env_sh(text: str) -> dict[str, str]:
    """`export NAME=value` lines of the test cluster's env.sh -> {NAME: value}; comments and others skipped.

    Values are taken literally (env.sh writes plain words, no quoting or expansion).
    """
    found = {}
    for line in text.splitlines():
        match = re.fullmatch(r"\s*export\s+([A-Za-z_][A-Za-z0-9_]*)=(.*)", line)
        if match:
            found[match.group(1)] = match.group(2).strip().strip("'\"")
    return found


def parse_rpc_stats(text: str) -> dict:
    """`sdiag` or `sacctmgr show stats` output -> {"since": str, "types": {name: count}, "users": {name: count}}.

    "since" is the "Data since" line's value (it changes when the daemon restarts or its stats are reset;
    "" when absent). Counts are RPCs since then.
    """
    since = re.search(r"^Data since\s+(.*)$", text, re.M)
    out: dict = {"since": since.group(1).strip() if since else "", "types": {}, "users": {}}
    section = None
    for line in text.splitlines():
        if "statistics by message type" in line:
            section = "types"
        elif "statistics by user" in line:
            section = "users"
        elif line and not line[0].isspace():
            section = None
        elif section:
            match = re.match(r"\s+(\S+)\s+\(\s*\d+\)\s+count:(\d+)", line)
            if match:
                out[section][match.group(1)] = int(match.group(2))
    return out


def rpc_delta(before: dict, after: dict, names: tuple[str, ...], section: str = "types") -> int | None:
    """Sum of the counts of `names` that arrived between two parse_rpc_stats readings; None when the
    daemon restarted or was reset in between (its counts started again from zero)."""
    if before["since"] != after["since"]:
        return None
    return sum(after[section].get(n, 0) - before[section].get(n, 0) for n in names)


def tcp_to_port(proc_net_tcp: str, port: int) -> dict[int, int]:
    """Established TCP connections whose remote port is `port`, in /proc/net/tcp(6) text (state 01):
    {socket inode: local port}."""
    found = {}
    for line in proc_net_tcp.splitlines()[1:]:
        fields = line.split()
        if len(fields) > 9 and fields[3] == "01" and fields[2].rsplit(":", 1)[-1] == f"{port:04X}":
            found[int(fields[9])] = int(fields[1].rsplit(":", 1)[-1], 16)
    return found


def sshd_events(lines: list[str]) -> list[tuple[str, int]]:
    """sshd (LogLevel VERBOSE) lines -> [("login" | "command", client port)] in log order.

    "Accepted publickey for U from H port P ..." is a login, "Starting session: command for U from H port P
    id N" a remote command over the connection from port P.
    """
    events = []
    for line in lines:
        match = re.search(r"(Accepted publickey|Starting session: command) for \S+ from \S+ port (\d+)", line)
        if match:
            events.append(("login" if match.group(1).startswith("Accepted") else "command", int(match.group(2))))
    return events


# -- the cluster's counters ------------------------------------------------------------------------
def _stats(command: list[str]) -> dict | None:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return parse_rpc_stats(done.stdout) if done.returncode == 0 else None


class OurConnections(threading.Thread):
    """Every `every_s` seconds: which established connections to `port` belong to processes of this bench
    (those whose environment holds `marker`, e.g. the bench's private HPC_SESSION_DIR=...). Collects their
    client ports in `ports` (to pick our lines out of the shared sshd log) and the most open at once in `peak`.

    A connection that lives less than `every_s` can be missed; step connections and masters live seconds.
    """

    def __init__(self, port: int, marker: bytes, every_s: float = 0.2):
        super().__init__(daemon=True)
        self.port, self.marker, self.every_s = port, marker, every_s
        self.peak, self.ports = 0, set()
        self._ours: dict[tuple[str, float], bool] = {}  # (pid, start) -> ours; a reused pid starts anew
        self._halt = threading.Event()  # not `_stop`: threading.Thread has a method of that name

    def _our_pids(self) -> list[str]:
        pids = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                key = (pid, os.stat(f"/proc/{pid}").st_mtime)
                if key not in self._ours:
                    self._ours[key] = self.marker in Path(f"/proc/{pid}/environ").read_bytes()
            except OSError:
                continue
            if self._ours[key]:
                pids.append(pid)
        return pids

    def _our_inodes(self) -> set[int]:
        inodes = set()
        for pid in self._our_pids():
            try:
                for fd in os.listdir(f"/proc/{pid}/fd"):
                    link = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if link.startswith("socket:["):
                        inodes.add(int(link[8:-1]))
            except OSError:
                continue
        return inodes

    def run(self) -> None:
        while not self._halt.is_set():
            conns: dict[int, int] = {}
            for name in ("/proc/net/tcp", "/proc/net/tcp6"):
                try:
                    conns |= tcp_to_port(Path(name).read_text(), self.port)
                except OSError:
                    pass
            if conns:
                inodes = self._our_inodes()
                mine = [local for inode, local in conns.items() if inode in inodes]
                self.ports.update(mine)
                self.peak = max(self.peak, len(mine))
            self._halt.wait(self.every_s)

    def stop(self) -> "OurConnections":
        self._halt.set()
        self.join()
        return self


# -- projects and runs -----------------------------------------------------------------------------
def cluster_env() -> dict[str, str]:
    """The test cluster's variables from env.sh; exits with the fix when the cluster is not up."""
    if not ENV_SH.is_file():
        raise SystemExit(f"{ENV_SH} is missing: the local test cluster is not up. Start it with "
                         "`bash scripts/test-cluster.sh up`, then run this bench again.")
    env = parse_env_sh(ENV_SH.read_text())
    for name in ("HPC_TEST_CLUSTER_DIR", "HPC_TEST_SSH_PORT"):
        if name not in env:
            raise SystemExit(f"{ENV_SH} has no {name}: re-create it with `bash scripts/test-cluster.sh up`")
    return env


def launch_env(cluster: dict[str, str], sessions: Path) -> dict[str, str]:
    """The environment of a bench's `dg launch`: this one plus the test cluster's variables, a private
    session directory `sessions` (the bench's own SSH masters and allocation locks) and this venv's
    bin first; variables that would send the assets elsewhere or as someone else are dropped."""
    env = {**os.environ, **cluster, "HPC_SESSION_DIR": str(sessions), "NO_COLOR": "1",
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    for name in ("HPC_CLUSTER", "HPC_FORCE_CLUSTER", "HPC_DOCKER_USER", "HPC_DOCKER_ACCOUNT"):
        env.pop(name, None)
    return env


def make_project(base: Path, variant: str, names: list[str]) -> Path:
    """A project copy with the no-op assets `names` on cluster docker; per-process sets ssh.session: process."""
    (base / variant).mkdir()
    project = copy_project(base / variant)
    (project / "workloads" / "noop.py").write_text(NOOP)
    for name in names:
        (project / "defs" / name).mkdir()
        (project / "defs" / name / "defs.yaml").write_text(
            "type: components.SlurmAssetComponent\n"
            "attributes:\n"
            f"  assets:\n    - key: {name}\n"
            "  script: noop.py\n"
            "  cluster: docker\n"
            '  resources: {time: "00:02:00"}\n')
    if variant == "per-process":
        (project / "clusters" / "overrides" / "docker.yaml").write_text("ssh:\n  session: process\n")
    home = base / f"home-{variant}"
    home.mkdir()
    (home / "dagster.yaml").write_text(INSTANCE)
    return project


def launch(project: Path, home: Path, names: list[str], env: dict[str, str], max_concurrent: int,
           sshd_log: Path, port: int, timeout_s: float) -> dict[str, float | None]:
    """One `dg launch` of all `names` in `project`; returns the measures of MEASURES (counts, seconds).

    Raises SystemExit with dg's output when the launch fails or not every asset materialized.
    """
    config = {"execution": {"config": {"multiprocess": {"max_concurrent": max_concurrent}}}}
    log = LogMark(sshd_log)
    sdiag, dbd = _stats(["sdiag"]), _stats(["sacctmgr", "show", "stats"])
    sampler = OurConnections(port, f"HPC_SESSION_DIR={env['HPC_SESSION_DIR']}".encode())
    sampler.start()
    started = time.perf_counter()
    try:
        done = subprocess.run([str(Path(sys.executable).parent / "dg"), "launch", "--assets", ",".join(names),
                               "--config-json", json.dumps(config)],
                              cwd=project, env={**env, "DAGSTER_HOME": str(home), "PYTHONPATH": str(project)},
                              capture_output=True, text=True, timeout=timeout_s)
    finally:
        wall = time.perf_counter() - started
        sampler.stop()
    sdiag_after, dbd_after = _stats(["sdiag"]), _stats(["sacctmgr", "show", "stats"])
    materialized = _materializations(home)
    if done.returncode != 0 or materialized != len(names):
        raise SystemExit(f"dg launch in {project} failed (exit {done.returncode}, {materialized}/{len(names)} "
                         f"materialized):\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}")
    events = sshd_events(log.lines())
    ours = [kind for kind, client in events if client in sampler.ports]
    return {
        "wall_s": wall,
        "logins": ours.count("login"),
        "commands": ours.count("command"),
        "squeue": rpc_delta(sdiag, sdiag_after, SQUEUE_RPCS) if sdiag and sdiag_after else None,
        "sacct": rpc_delta(dbd, dbd_after, (SACCT_RPC,)) if dbd and dbd_after else None,
        "peak_ssh": sampler.peak,
        "others_logins": sum(kind == "login" for kind, _ in events) - ours.count("login"),
    }


def newest_run(home: Path) -> tuple[str, str, int]:
    """(run id, status, materializations) of the newest run of the instance at `home`, read in a fresh
    process; ("", "NONE", 0) when it has none or cannot be read."""
    probe = textwrap.dedent(f"""\
        import json
        import dagster as dg
        with dg.DagsterInstance.from_config({str(home)!r}) as instance:
            runs = instance.get_runs(limit=1)
            n = sum(1 for r in instance.all_logs(runs[0].run_id)
                    if r.dagster_event is not None and r.dagster_event.event_type_value == "ASSET_MATERIALIZATION") if runs else 0
            print(json.dumps([runs[0].run_id, runs[0].status.value, n] if runs else ["", "NONE", 0]))
        """)
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    lines = out.stdout.strip().splitlines()
    if out.returncode != 0 or not lines:
        return "", "NONE", 0
    run_id, status, count = json.loads(lines[-1])
    return run_id, status, count


def _materializations(home: Path) -> int:
    """Materializations in the newest run of the instance at `home` (0 when the run did not succeed)."""
    _, status, count = newest_run(home)
    return count if status == "SUCCESS" else 0


# -- report ----------------------------------------------------------------------------------------
def medians(samples: list[dict]) -> dict[str, float | None]:
    """Median of each measure over the runs (runs where it is None left out), plus "<count>/min" rates."""
    out: dict[str, float | None] = {}
    for key in MEASURES:
        values = [s[key] for s in samples if s[key] is not None]
        out[key] = statistics.median(values) if values else None
    for key in PER_MINUTE:
        rates = [s[key] / (s["wall_s"] / 60) for s in samples if s[key] is not None]
        out[f"{key}/min"] = statistics.median(rates) if rates else None
    return out


def table(by_variant: dict[str, dict[str, float | None]]) -> str:
    """Markdown table: one row per measure, per-process and shared medians, ratio shared / per-process."""
    rows = ["| measure (median) | per-process | shared | shared / per-process |", "|---|---:|---:|---:|"]
    for key in by_variant["per-process"]:
        a, b = by_variant["per-process"][key], by_variant["shared"][key]
        ratio = f"{b / a:.2f}x" if a and b is not None else "n/a"
        show = lambda v: "n/a" if v is None else f"{v:.1f}"  # noqa: E731
        rows.append(f"| {key} | {show(a)} | {show(b)} | {ratio} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per variant (default 3)")
    parser.add_argument("--assets", type=int, default=50, help="no-op assets in the one launch (default 50)")
    parser.add_argument("--max-concurrent", type=int, default=8, help="step processes at once (default 8)")
    parser.add_argument("--timeout", type=float, default=1200, help="seconds one dg launch may take (default 1200)")
    args = parser.parse_args()
    cluster = cluster_env()
    sshd_log = Path(cluster["HPC_TEST_CLUSTER_DIR"]) / "state" / "log" / "sshd-login.log"
    if not sshd_log.is_file():
        raise SystemExit(f"{sshd_log} is missing: the test cluster's sshd does not log here; restart it with "
                         "`bash scripts/test-cluster.sh up`")
    port = int(cluster["HPC_TEST_SSH_PORT"])
    names = [f"noop_{i:02d}" for i in range(args.assets)]
    base = Path(tempfile.mkdtemp(prefix="hpc-bench-ssh-"))
    sessions = Path(tempfile.mkdtemp(prefix="hpc-bs-"))  # short: control socket paths are limited to ~100 bytes
    env = launch_env(cluster, sessions)
    samples: dict[str, list[dict]] = {v: [] for v in VARIANTS}
    try:
        projects = {v: make_project(base, v, names) for v in VARIANTS}
        for run in range(args.runs):
            for variant in VARIANTS if run % 2 == 0 else reversed(VARIANTS):
                close_all(sessions)  # the shared run's one login is its own
                sample = launch(projects[variant], base / f"home-{variant}", names, env, args.max_concurrent,
                                sshd_log, port, args.timeout)
                samples[variant].append(sample)
                print(f"run {run + 1} {variant}: " + ", ".join(
                    f"{k} {'n/a' if v is None else round(v, 1)}" for k, v in sample.items()), flush=True)
    finally:
        close_all(sessions)
        shutil.rmtree(sessions, ignore_errors=True)
        shutil.rmtree(base, ignore_errors=True)
    print(f"\n{args.assets} no-op assets on cluster docker, one dg launch, max_concurrent {args.max_concurrent}; "
          f"{args.runs} run(s) per variant, interleaved")
    print(table({v: medians(samples[v]) for v in VARIANTS}))


if __name__ == "__main__":
    main()
