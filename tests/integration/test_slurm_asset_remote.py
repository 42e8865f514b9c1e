"""SlurmAssetComponent against real Slurm through real SSH: no mocks of either."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import dagster as dg
import pytest

from components.core import ssh, transports
from components.core.session import close_all as close_sessions
from components.core.metrics import SUB_SECOND
from components.core.run_metadata import RUN_KEYS
from tests.conftest import copy_project, materialize as _materialize
from tests.integration.conftest import SSHD_LOG, ssh_as_user
from tests.integration.logs import LogMark

pytestmark = pytest.mark.integration


def _defs(project: Path, name: str, body: str) -> None:
    folder = project / "defs" / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "defs.yaml").write_text(body)


def _workload(project: Path, name: str, code: str) -> None:
    (project / "workloads" / name).write_text(textwrap.dedent(code))


def _asset(project, name, script, *, resources="", extra=""):
    body = (
        "type: components.SlurmAssetComponent\n"
        "attributes:\n"
        f"  assets:\n    - key: {name}\n"
        f"  script: {script}\n"
        "  cluster: docker\n"
        f"  resources: {{{resources}}}\n"
    )
    body += textwrap.indent(textwrap.dedent(extra), "  ")
    _defs(project, name, body)


def _failure_text(result) -> str:
    event = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    error = event.step_failure_data.error
    parts = []
    while error is not None:
        parts.append(error.message)
        error = error.cause
    return "\n".join(parts)


def _failure_meta(result) -> dict:
    event = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    return {k: v.value for k, v in event.step_failure_data.user_failure_data.metadata.items()}


@pytest.fixture
def project(tmp_path, slurm_cluster, monkeypatch):
    monkeypatch.setenv("HPC_TEST_CLUSTER_DIR", str(slurm_cluster))
    return copy_project(tmp_path)


def test_success_with_pipes_metadata_logs_and_accounting(project, monkeypatch):
    defs_yaml = project / "defs" / "numbers" / "defs.yaml"
    defs_yaml.write_text(defs_yaml.read_text() + "  cluster: docker\n  forward_env: [HPC_TEST_SECRET]\n")
    monkeypatch.setenv("HPC_TEST_SECRET", "s3cret-value")
    result, instance = _materialize(project, ["raw/numbers"], monkeypatch)
    assert result.success, _failure_text(result)
    meta = result.get_asset_materialization_events()[0].step_materialization_data.materialization.metadata
    assert meta["rows"].value == 5000  # from the workload, through Pipes over SSH
    assert meta["slurm_state"].value == "COMPLETED"
    assert meta["cluster"].value == "docker"
    # The same keys as a local run of the asset (tests/core/test_local.py), each with a value.
    assert set(RUN_KEYS) <= set(meta), set(RUN_KEYS) - set(meta)
    assert meta["exit_code"].value == 0
    # sacct counts whole seconds: a sub-second job has no efficiency, and says so.
    efficiency = meta["cpu_efficiency"].value
    assert isinstance(efficiency, float) if meta["elapsed_s"].value > 0 else efficiency == f"n/a: {SUB_SECOND}", efficiency
    script = meta["job_script"].value
    assert script.startswith("```bash\n") and "#SBATCH" in script and "draw_numbers.py" in script
    assert not any("s3cret-value" in str(value.value) for value in meta.values())  # forward_env stays out
    checks = [e.asset_check_evaluation_data for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
    assert [(c.check_name, c.passed) for c in checks] == [("values_in_range", True)]
    logs = [r.user_message for r in instance.all_logs(result.run_id)]
    assert any("wrote 5000 numbers" in m for m in logs)
    assert any("submitted Slurm job" in m for m in logs)
    assert any("RUNNING on" in m for m in logs) or any("PENDING" in m for m in logs)
    # The job directory is private.
    job_dir = meta["job_dir"].value
    assert ssh_as_user(project_state(), f"stat -c %a {job_dir}").strip() == "700"


def project_state() -> Path:
    return Path(os.environ["HPC_TEST_CLUSTER_DIR"])


def test_exit_code_fails_with_state_and_stderr(project, monkeypatch):
    _workload(project, "fail.py", "import sys\nprint('cannot open input.csv', file=sys.stderr)\nsys.exit(1)\n")
    _asset(project, "failing", "fail.py", resources='time: "00:02:00"')
    result, _ = _materialize(project, ["failing"], monkeypatch)
    assert not result.success
    text = _failure_text(result)
    assert "ended FAILED (exit code 1)" in text and "cannot open input.csv" in text
    assert _failure_meta(result)["slurm_state"] == "FAILED"


def test_memory_limit_is_out_of_memory(project, monkeypatch):
    _workload(project, "hog.py", "blocks = []\nwhile True:\n    blocks.append(bytearray(50 * 1024 * 1024))\n")
    _asset(project, "hog", "hog.py", resources='mem: 200M, time: "00:02:00"')
    result, _ = _materialize(project, ["hog"], monkeypatch)
    assert not result.success
    text = _failure_text(result)
    assert "ended OUT_OF_MEMORY (killed by signal 9 (SIGKILL), exit code 137)" in text, text
    assert "exceeded its memory limit" in text
    # sacct says 0:125; the metadata says what the message says
    meta = _failure_meta(result)
    assert (meta["exit_code"], meta["signal"], meta["slurm_exit_code"]) == (137, 9, "0:125")


def test_scancel_from_outside_is_cancelled(project, monkeypatch):
    _workload(project, "slow.py", "import time\ntime.sleep(120)\n")
    _asset(project, "slow", "slow.py", resources='time: "00:05:00"')
    state = project_state()

    def cancel_when_running():
        for _ in range(200):
            out = ssh_as_user(state, "squeue -h -n slow -t RUNNING -o %i", check=False).strip()
            if out:
                ssh_as_user(state, f"scancel {out.split()[0]}")
                return
            time.sleep(0.2)

    threading.Thread(target=cancel_when_running, daemon=True).start()
    result, _ = _materialize(project, ["slow"], monkeypatch)
    assert not result.success
    assert "ended CANCELLED" in _failure_text(result)


def test_hostile_yaml_values_are_inert_on_the_cluster(project, monkeypatch, tmp_path):
    marker = "/tmp/hpc-pwned-marker"
    ssh_as_user(project_state(), f"rm -f {marker}")
    _workload(
        project,
        "echo_args.py",
        """\
        import json, os, sys
        from dagster_pipes import open_dagster_pipes
        with open_dagster_pipes() as p:
            p.report_asset_materialization(metadata={"args": json.dumps(sys.argv[1:]), "env": os.environ["EVIL"]})
        """,
    )
    hostile = f"$(touch {marker})`touch {marker}`'\"; touch {marker}"
    _asset(
        project,
        "evil",
        "echo_args.py",
        resources='time: "00:02:00"',
        extra=f"args: [{json.dumps(hostile)}]\nenv:\n  EVIL: {json.dumps(hostile)}\n",
    )
    result, _ = _materialize(project, ["evil"], monkeypatch)
    assert result.success, _failure_text(result)
    meta = result.get_asset_materialization_events()[0].step_materialization_data.materialization.metadata
    assert json.loads(meta["args"].value) == [hostile]
    assert meta["env"].value == hostile
    assert ssh_as_user(project_state(), f"test -e {marker} && echo yes || echo no").strip() == "no"


def test_secrets_reach_the_job_but_not_the_script(project, monkeypatch):
    _workload(
        project,
        "secret.py",
        """\
        import os, pathlib
        from dagster_pipes import open_dagster_pipes
        with open_dagster_pipes() as p:
            p.report_asset_materialization(metadata={
                "seen": os.environ.get("API_TOKEN") == "s3cr3t-value",
                "in_script": "s3cr3t-value" in pathlib.Path("job.sh").read_text(),
                "file_left": pathlib.Path(".hpc-secrets").exists(),
            })
        """,
    )
    _asset(project, "secret", "secret.py", resources='time: "00:02:00"', extra="forward_env: [API_TOKEN]\n")
    monkeypatch.setenv("API_TOKEN", "s3cr3t-value")
    result, instance = _materialize(project, ["secret"], monkeypatch)
    assert result.success, _failure_text(result)
    meta = result.get_asset_materialization_events()[0].step_materialization_data.materialization.metadata
    assert (meta["seen"].value, meta["in_script"].value, meta["file_left"].value) == (True, False, False)
    assert not any("s3cr3t-value" in (r.user_message or "") for r in instance.all_logs(result.run_id))


def test_twenty_assets_share_one_login(project, monkeypatch):
    _workload(project, "tiny.py", "from dagster_pipes import open_dagster_pipes\nwith open_dagster_pipes() as p:\n    p.report_asset_materialization(metadata={'ok': 1})\n")
    names = [f"fan_{i:02d}" for i in range(20)]
    for name in names:
        _asset(project, name, "tiny.py", resources='time: "00:02:00"')
    ssh.close_all()
    close_sessions(Path(os.environ["HPC_SESSION_DIR"]))
    logins = LogMark(SSHD_LOG)
    result, _ = _materialize(project, names, monkeypatch)
    assert result.success, _failure_text(result)
    assert len(result.get_asset_materialization_events()) == 20
    assert logins.count("Accepted publickey") == 1


def test_jump_host_path(project, monkeypatch):
    (project / "clusters" / "docker-jump.yaml").write_text(
        "extends: docker\ndescription: test cluster through the jump host\nssh:\n  jump_hosts:\n    - {host: 127.0.0.1, port: 2223}\n"
    )
    _workload(project, "tiny.py", "from dagster_pipes import open_dagster_pipes\nwith open_dagster_pipes() as p:\n    p.report_asset_materialization(metadata={'via': 'jump'})\n")
    _asset(project, "jumped", "tiny.py", resources='time: "00:02:00"')
    text = (project / "defs" / "jumped" / "defs.yaml").read_text().replace("cluster: docker", "cluster: docker-jump")
    (project / "defs" / "jumped" / "defs.yaml").write_text(text)
    ssh.close_all()
    result, _ = _materialize(project, ["jumped"], monkeypatch)
    assert result.success, _failure_text(result)
    transport = next(iter(transports._POOL.values()))
    assert [h.port for h in transport.target.jumps] == [2223]


def test_changed_host_key_is_refused(project, monkeypatch, tmp_path):
    wrong = tmp_path / "known_hosts"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "impostor")], check=True)
    key = (tmp_path / "impostor.pub").read_text().split()[:2]
    wrong.write_text(f"[127.0.0.1]:2222 {key[0]} {key[1]}\n")
    (project / "clusters" / "overrides" / "docker.yaml").write_text(f"ssh:\n  known_hosts: {wrong}\n")
    _workload(project, "tiny.py", "print('never runs')\n")
    _asset(project, "guarded", "tiny.py", resources='time: "00:02:00"')
    ssh.close_all()
    result, _ = _materialize(project, ["guarded"], monkeypatch)
    assert not result.success
    text = _failure_text(result)
    assert "does not match" in text and "refusing to connect" in text and "ssh-keyscan" in text


def test_unknown_host_key_is_refused(project, monkeypatch, tmp_path):
    (tmp_path / "empty_known_hosts").write_text("")
    (project / "clusters" / "overrides" / "docker.yaml").write_text(f"ssh:\n  known_hosts: {tmp_path / 'empty_known_hosts'}\n")
    _workload(project, "tiny.py", "print('never runs')\n")
    _asset(project, "guarded", "tiny.py", resources='time: "00:02:00"')
    ssh.close_all()
    result, _ = _materialize(project, ["guarded"], monkeypatch)
    assert not result.success
    assert "refusing an unknown host key" in _failure_text(result)


def test_time_limit_is_timeout(project, monkeypatch):
    _workload(project, "forever.py", "import time\nprint('working', flush=True)\ntime.sleep(900)\n")
    _asset(project, "forever", "forever.py", resources='time: "00:01:00"')
    started = time.monotonic()
    result, _ = _materialize(project, ["forever"], monkeypatch)
    assert not result.success
    text = _failure_text(result)
    assert "ended TIMEOUT (killed by signal" in text and "past its time limit" in text, text
    assert time.monotonic() - started < 240


_RUNNER = """
import sys, dagster as dg
sys.path.insert(0, {project!r})
defs = dg.ComponentTree.for_project(__import__('pathlib').Path({project!r})).build_defs()
instance = dg.DagsterInstance.get()
job = defs.resolve_implicit_global_asset_job_def()
job.execute_in_process(instance=instance, asset_selection=[dg.AssetKey.from_user_string({key!r})], raise_on_error=False)
"""


def _start_runner(project: Path, key: str) -> subprocess.Popen:
    home = project / ".dagster"
    env = {**os.environ, "DAGSTER_HOME": str(home), "PYTHONPATH": str(project)}
    return subprocess.Popen(
        [sys.executable, "-c", _RUNNER.format(project=str(project), key=key)],
        cwd=project, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
    )


def _wait_running(name: str, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = ssh_as_user(project_state(), f"squeue -h -n {name} -t RUNNING -o %i", check=False).strip()
        if out:
            return out.split()[0]
        time.sleep(0.2)
    raise AssertionError(f"job {name} never ran")


def _job_state(job_id: str) -> str:
    return ssh_as_user(project_state(), f"squeue -h -j {job_id} -o %T", check=False).strip()


def test_terminating_the_run_cancels_the_job_within_5s(project):
    _workload(project, "slow.py", "import time\ntime.sleep(300)\n")
    _asset(project, "interrupted", "slow.py", resources='time: "00:10:00"')
    runner = _start_runner(project, "interrupted")
    try:
        job_id = _wait_running("interrupted")
        os.killpg(runner.pid, signal.SIGINT)
        sent = time.monotonic()
        while _job_state(job_id) in ("RUNNING", "PENDING") and time.monotonic() - sent < 10:
            time.sleep(0.1)
        waited = time.monotonic() - sent
        assert _job_state(job_id) in ("", "CANCELLED", "COMPLETING"), _job_state(job_id)
        assert waited < 5, f"job still running {waited:.1f}s after the run was terminated"
    finally:
        runner.kill()
        runner.wait()


def test_restarted_process_reattaches_instead_of_resubmitting(project, monkeypatch):
    _workload(
        project,
        "steady.py",
        "import time\nfrom dagster_pipes import open_dagster_pipes\nwith open_dagster_pipes() as p:\n"
        "    time.sleep(12)\n    p.report_asset_materialization(metadata={'done': True})\n",
    )
    _asset(project, "steady", "steady.py", resources='time: "00:05:00"')
    runner = _start_runner(project, "steady")
    job_id = _wait_running("steady")
    os.killpg(runner.pid, signal.SIGKILL)  # the orchestrator dies without cleaning up
    runner.wait()
    assert _job_state(job_id) == "RUNNING"
    monkeypatch.setenv("DAGSTER_HOME", str(project / ".dagster"))
    instance = dg.DagsterInstance.get()
    crashed = instance.get_runs(limit=1)[0]
    tag = crashed.tags["hpc/job/steady"]
    assert tag.split("|")[1] == job_id
    result, run_instance = _materialize(project, ["steady"], monkeypatch, tags={"hpc/job/steady": tag})
    assert result.success, _failure_text(result)
    meta = result.get_asset_materialization_events()[0].step_materialization_data.materialization.metadata
    assert meta["slurm_job_id"].value == job_id
    assert meta["done"].value is True
    logs = [r.user_message for r in run_instance.all_logs(result.run_id)]
    assert any(f"re-attaching to Slurm job {job_id}" in m for m in logs)
    assert not any("submitted Slurm job" in m for m in logs)


@contextlib.contextmanager
def _node_fails_under(job_name: str, delay_s: float = 0.0):
    """Set the node of the running job DOWN from outside (as an admin would); resume it afterwards."""
    state = project_state()
    downed: list[str] = []

    def fail_node():
        for _ in range(300):
            node = ssh_as_user(state, f"squeue -h -n {job_name} -t RUNNING -o %N", check=False).strip()
            if node:
                time.sleep(delay_s)
                subprocess.run(["scontrol", "update", f"nodename={node}", "state=down", "reason=integration-test"], check=True)
                downed.append(node)
                return
            time.sleep(0.2)

    threading.Thread(target=fail_node, daemon=True).start()
    try:
        yield downed
    finally:
        for node in downed:
            subprocess.run(["scontrol", "update", f"nodename={node}", "state=resume"], check=False)


def test_node_failure_fails_with_node_fail(project, monkeypatch):
    _workload(project, "long.py", "import time\ntime.sleep(120)\n")
    _asset(project, "doomed", "long.py", resources='time: "00:05:00"')
    with _node_fails_under("doomed") as downed:
        result, _ = _materialize(project, ["doomed"], monkeypatch)
    assert downed, "the job never started"
    assert not result.success
    assert "ended NODE_FAIL" in _failure_text(result) and "a node of the job failed" in _failure_text(result)


def test_retry_policy_resubmits_after_node_failure(project, monkeypatch):
    marker = f"attempted-{os.getpid()}-{time.time_ns()}"
    _workload(
        project,
        "flaky.py",
        f"""\
        import os, pathlib, time
        from dagster_pipes import open_dagster_pipes
        with open_dagster_pipes() as p:
            flag = pathlib.Path(os.environ["HPC_DATA_DIR"]) / {marker!r}
            flag.parent.mkdir(parents=True, exist_ok=True)
            if not flag.exists():
                flag.touch()
                time.sleep(120)
            p.report_asset_materialization(metadata={{"node": os.uname().nodename}})
        """,
    )
    _asset(project, "flaky", "flaky.py", resources='time: "00:05:00"', extra="submission:\n  retry_states: [NODE_FAIL]\n  max_attempts: 2\n")
    # The delay lets the first attempt create its marker before its node goes down.
    with _node_fails_under("flaky", delay_s=1.0) as downed:
        result, instance = _materialize(project, ["flaky"], monkeypatch)
    assert result.success, _failure_text(result)
    meta = result.get_asset_materialization_events()[0].step_materialization_data.materialization.metadata
    assert meta["attempt"].value == 2
    assert meta["node"].value != downed[0]
    assert any("resubmitting (attempt 2 of 2)" in r.user_message for r in instance.all_logs(result.run_id))
