"""One login per cluster, typed once: `hpc login` on a terminal against the test cluster's password +
TOTP login node (sshd with PAM keyboard-interactive and the real pam_oath), then runs that never
prompt: ten assets through `dg launch` (default multiprocess executor, a process per step) and a
run the daemon launches from a schedule, all over that one session. After logout or expiry a run
fails at once, saying which command opens a session. Logins and commands are counted from the
login node's own sshd log."""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import VENV_BIN, copy_project, run_dg
from tests.integration.logs import LogMark
from tests.integration.otp import answer_prompts, fresh_otp_code, otp_env, sshd_log
from tests.integration.ui import DagsterUI, failures, materializations, run_logs

pytestmark = pytest.mark.integration

CLUSTER = "docker-otp"
ASSETS = [f"otp/a{i}" for i in range(10)]
TINY = "from dagster_pipes import open_dagster_pipes\nwith open_dagster_pipes() as p:\n    p.report_asset_materialization(metadata={'ok': 1})\n"
SCHEDULE = """\
import dagster as dg

every_minute = dg.ScheduleDefinition(
    name="otp_every_minute", cron_schedule="* * * * *", target=dg.AssetSelection.assets("otp/a0"),
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
"""
ACCEPTED = "Accepted keyboard-interactive/pam"


@pytest.fixture(scope="module")
def project(slurm_cluster, tmp_path_factory):
    project = copy_project(tmp_path_factory.mktemp("sessions"))
    (project / "workloads" / "tiny.py").write_text(TINY)
    (project / "defs" / "otp_schedule.py").write_text(SCHEDULE)
    for key in ASSETS:
        folder = project / "defs" / key
        folder.mkdir(parents=True)
        (folder / "defs.yaml").write_text(
            "type: components.SlurmAssetComponent\nattributes:\n"
            f"  assets:\n    - key: {key}\n  script: tiny.py\n  cluster: {CLUSTER}\n  resources: {{time: \"00:02:00\"}}\n")
    return project


def _env(**extra: str) -> dict[str, str]:
    # Runs get neither the password nor a code: only the session can let them in.
    env = {k: v for k, v in os.environ.items() if k not in ("HPC_TEST_OTP_PASSWORD", "HPC_TEST_OTP_CODE")}
    return env | extra


def _ui_env() -> dict[str, str]:
    # DagsterUI sets the project's DAGSTER_HOME over os.environ; only the secrets are taken away here.
    return {"HPC_TEST_OTP_PASSWORD": "", "HPC_TEST_OTP_CODE": ""}


def _hpc(project: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(VENV_BIN / "hpc"), *args], cwd=project, env=_env(), capture_output=True, text=True, timeout=120)


def _login(project: Path):
    node = otp_env()
    return answer_prompts([str(VENV_BIN / "hpc"), "login", CLUSTER], node.password, fresh_otp_code(), cwd=project,
                          env=_env(), timeout_s=60)


def _launch(project: Path, keys: list[str], home: Path) -> subprocess.CompletedProcess:
    selection = " or ".join(f'key:"{key}"' for key in keys)
    config = '{"execution": {"config": {"multiprocess": {"max_concurrent": 8}}}}'
    return run_dg(project, "launch", "--assets", selection, "--config-json", config, timeout=600,
                  env=_env(DAGSTER_HOME=str(home)))


def test_one_login_serves_a_ten_asset_run_and_a_scheduled_run(project, tmp_path):
    assert _hpc(project, "logout", CLUSTER).returncode == 0
    logins, commands = LogMark(sshd_log("otp")), LogMark(sshd_log("otp"))
    login = _login(project)
    assert login.returncode == 0, login.output
    assert len(login.prompts) == 2 and "session open until" in login.output
    assert logins.count(ACCEPTED) == 1
    status = _hpc(project, "login", "--status", CLUSTER)
    assert re.search(r"docker-otp: session open until .* \(1[01]:\d\d:\d\d left, opened by hpc login\)", status.stdout), status

    # The ten assets (8 step processes at once) and the schedule's run overlap: one login serves both.
    ui = DagsterUI(project, env=_ui_env())
    try:
        started = time.monotonic()
        run_id = ui.launch(ASSETS, run_config={"execution": {"config": {"multiprocess": {"max_concurrent": 8}}}})
        assert ui.wait(run_id, timeout=400) == "SUCCESS", failures(ui.instance(), run_id)
        wall = time.monotonic() - started
        assert len(materializations(ui.instance(), run_id)) == 10
        deadline = time.monotonic() + 90
        scheduled = []
        while not scheduled and time.monotonic() < deadline:
            scheduled = [r for r in ui.instance().get_runs() if r.tags.get("dagster/schedule_name") == "otp_every_minute"]
            time.sleep(1)
        assert scheduled, "the schedule launched no run within 90 s"
        assert ui.wait(scheduled[0].run_id, timeout=240) == "SUCCESS", failures(ui.instance(), scheduled[0].run_id)
    finally:
        ui.stop()
    per_minute = commands.count("Starting session: command") / (wall / 60)
    print(f"10 assets over one session: {wall:.0f}s, {per_minute:.0f} remote commands per minute")
    assert logins.count(ACCEPTED) == 1, "the scheduled run logged in on its own"


def test_after_logout_a_run_fails_at_once_naming_the_command(project, tmp_path):
    _hpc(project, "logout", CLUSTER)
    started = time.monotonic()
    run = _launch(project, ASSETS[:1], tmp_path)
    took = time.monotonic() - started
    text = run.stdout + run.stderr
    assert run.returncode != 0
    assert f"no session for {CLUSTER}: run `hpc login {CLUSTER}`" in text and "Nothing was submitted" in text, text[-3000:]
    assert took < 120, f"failing took {took:.0f}s"


def test_a_session_past_its_lifetime_is_refused(project, tmp_path):
    override = project / "clusters" / "overrides" / f"{CLUSTER}.yaml"
    override.write_text('ssh:\n  session_lifetime: "00:00:10"\n')
    try:
        login = _login(project)
        assert login.returncode == 0, login.output
        assert _hpc(project, "login", "--status", CLUSTER).stdout.count("expiring") == 1
        assert "expiring" in _sensor_says(project)
        time.sleep(11)
        run = _launch(project, ASSETS[:1], tmp_path)
        text = run.stdout + run.stderr
        assert run.returncode != 0 and f"the session for {CLUSTER} expired at" in text, text[-3000:]
        assert _hpc(project, "login", "--status", CLUSTER).stdout.strip() == f"{CLUSTER}: no session"
        assert f"{CLUSTER}: no session: its runs fail until you run `hpc login {CLUSTER}`" in _sensor_says(project)
    finally:
        override.unlink()


SENSOR_TICK = """
import dagster as dg
from pathlib import Path
from components.defs_check import load_checked

defs, mistake = load_checked(Path("."))
assert mistake is None, mistake
sensor = next(s for s in defs.sensors if s.name == "hpc_sessions")
with dg.instance_for_test() as instance:
    print(sensor.evaluate_tick(dg.build_sensor_context(instance=instance)).skip_message)
"""


def _sensor_says(project: Path) -> str:
    """The skip reason of one tick of the code location's hpc_sessions sensor, in a process of its own."""
    done = subprocess.run([str(VENV_BIN / "python"), "-c", SENSOR_TICK], cwd=project, env=_env(PYTHONPATH=str(project)),
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_a_wrong_code_is_refused_and_opens_nothing(project):
    _hpc(project, "logout", CLUSTER)
    node = otp_env()
    login = answer_prompts([str(VENV_BIN / "hpc"), "login", CLUSTER], node.password, "000000", cwd=project, env=_env(),
                           timeout_s=60)
    assert login.returncode == 2, login.output
    assert f"authentication as slurmuser on 127.0.0.1:2224 failed: {CLUSTER} refused the password or one-time code" in login.output
    assert _hpc(project, "login", "--status", CLUSTER).stdout.strip() == f"{CLUSTER}: no session"


TICKER = """\
import time
from dagster_pipes import open_dagster_pipes

with open_dagster_pipes() as pipes:
    for i in range(12):
        pipes.log.info(f"tick {i}")
        time.sleep(2)
    pipes.report_asset_materialization(metadata={"ticks": 12})
"""


def test_a_session_ended_mid_job_is_waited_for_and_a_new_login_rescues_the_run(project, tmp_path):
    """Logout (or a session that ran out) while the job runs: the step warns and waits; `hpc login`
    within the outage tolerance lets it carry on, with every Pipes message and no second job."""
    (project / "workloads" / "ticker.py").write_text(TICKER)
    folder = project / "defs" / "otp" / "long"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "defs.yaml").write_text(
        "type: components.SlurmAssetComponent\nattributes:\n  assets:\n    - key: otp/long\n  script: ticker.py\n"
        f"  cluster: {CLUSTER}\n  resources: {{time: \"00:05:00\"}}\n")
    try:
        assert _login(project).returncode == 0
        ui = DagsterUI(project, env=_ui_env())
        try:
            run_id = ui.launch(["otp/long"])
            deadline = time.monotonic() + 120
            while "RUNNING" not in _squeue_states(run_id) and time.monotonic() < deadline:
                time.sleep(0.5)
            assert "RUNNING" in _squeue_states(run_id)
            assert _hpc(project, "logout", CLUSTER).stdout.strip() == f"{CLUSTER}: session ended"
            time.sleep(8)
            assert _login(project).returncode == 0
            assert ui.wait(run_id, timeout=240) == "SUCCESS", failures(ui.instance(), run_id)
            logs = run_logs(ui.instance(), run_id)
        finally:
            ui.stop()
        assert any(f"lost contact with {CLUSTER}: no session for {CLUSTER}: run `hpc login {CLUSTER}`" in m for m in logs), logs
        assert any(f"contact with {CLUSTER} restored" in m for m in logs), logs
        assert [i for i in range(12) if f"tick {i}" not in logs] == [], "Pipes messages lost"
        assert len(_squeue_states(run_id, "all").splitlines()) == 1, "one job, never a second submission"
    finally:
        subprocess.run(["rm", "-rf", str(folder)])


def _squeue_states(run_id: str, states: str = "all") -> str:
    """squeue's state of each job whose directory belongs to this run, as root sees it."""
    out = subprocess.run(["squeue", "-h", "-t", states, "-o", "%T|%Z"], capture_output=True, text=True, timeout=60).stdout
    return "\n".join(line.split("|")[0] for line in out.splitlines() if f"/jobs/{run_id}/" in line + "/")
