"""`hpc doctor` against the real test cluster: all green as shipped, and each ✗ provoked by breaking one thing.

Most runs call the CLI's main in this process (a run takes about a second; the `hpc` entry point
spends several seconds importing Dagster); one runs `hpc doctor docker` as a user would.
Case not provoked here: a GPU class on a partition without GPU GRES (every partition of the test
cluster has GPUs), judged on sinfo output in tests/core/test_doctor.py, as is a QoS missing from the
user's association (the test user is associated with every QoS).
"""

from __future__ import annotations

import json
import os
import re
import subprocess

import pytest

from components import cli
from tests.conftest import VENV_BIN, copy_project
from tests.integration.conftest import ssh_as_user

pytestmark = pytest.mark.integration


@pytest.fixture
def project(slurm_cluster, tmp_path, monkeypatch):
    root = tmp_path / "project"
    root.mkdir()
    copy_project(root)
    monkeypatch.chdir(root)
    return root


def doctor(capsys, *args: str) -> tuple[int, dict[str, str], list[str]]:
    """Exit code, {check: line}, and the lines in order, of an in-process `hpc doctor`."""
    code = cli.main(["doctor", *args])
    lines = capsys.readouterr().out.splitlines()
    return code, {line[2:].split(":", 1)[0]: line for line in lines}, lines


def override(project, text: str) -> None:
    (project / "clusters" / "overrides" / "docker.yaml").write_text(text)


def keygen(path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "doctor-test", "-f", str(path)], check=True)
    return str(path)


def test_the_shipped_profile_passes_and_submit_reports_the_queue_wait(project, capsys):
    code, _, lines = doctor(capsys, "docker", "--json", "--submit")
    report = json.loads("\n".join(lines))
    assert code == 0, lines
    assert all(set(r) == {"check", "ok", "detail", "fix"} for r in report)
    assert [r["check"] for r in report if not r["ok"]] == []
    checks = {r["check"]: r["detail"] for r in report}
    assert list(checks)[:7] == ["profile", "host key", "authentication", "base dir", "data dir", "quota", "account"]
    assert {"partition class cpu", "partition class gpu", "partition class debug", "modules"} <= set(checks)
    for cname in ("cpu", "gpu", "debug"):
        # Other runs share the two test nodes: a job still waiting for them after 120 s is accepted, and cancelled.
        assert re.fullmatch(r"job \d+ (COMPLETED, queue wait \d+(s|min)|accepted, still PENDING \((Resources|Priority)\) after 120s: cancelled.*)",
                            checks[f"test job {cname}"]), checks
    assert "presents ssh-ed25519 SHA256:" in checks["host key"] and "known_hosts:1" in checks["host key"]
    assert "ssh-keygen -lf" in checks["host key"]


def test_hpc_doctor_as_a_command(project):
    env = {**os.environ, "PYTHONPATH": str(project), "NO_COLOR": "1"}
    result = subprocess.run([str(VENV_BIN / "hpc"), "doctor", "docker"], cwd=project, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) >= 11 and all(line.startswith("✓ ") for line in lines), result.stdout
    assert "Traceback" not in result.stderr


def _real_fingerprint(slurm_cluster) -> str:
    line = (slurm_cluster / "ssh" / "known_hosts").read_text().splitlines()[0]
    return subprocess.run(["ssh-keygen", "-lf", "-"], input=line, capture_output=True, text=True).stdout.split()[1]


def test_a_changed_host_key(project, capsys, slurm_cluster):
    # The jump host's key, pinned for the login node: what a reinstalled (or impersonated) host looks like.
    jump_key = (slurm_cluster / "ssh" / "known_hosts").read_text().splitlines()[1].split(" ", 1)[1]
    (project / "known_hosts").write_text(f"[127.0.0.1]:2222 {jump_key}\n")
    override(project, f"ssh:\n  known_hosts: {project / 'known_hosts'}\n")
    code, by_check, lines = doctor(capsys, "docker")
    assert code == 1
    host = by_check["host key"]
    assert host.startswith("✗ host key: ") and "does not match" in host, lines
    assert f"127.0.0.1:2222 presents ssh-ed25519 {_real_fingerprint(slurm_cluster)}" in host
    assert "— fix: compare it with the fingerprint" in host and "ssh-keyscan -p 2222 127.0.0.1" in host
    assert by_check["authentication"] == "- authentication: skipped (needs host key)"
    assert by_check["base dir"] == "- base dir: skipped (needs authentication)"
    assert by_check["account"] == "- account: skipped (needs authentication)"
    assert by_check["partition classes"] == "- partition classes: skipped (needs authentication)"


def test_a_host_certificate_is_traced_to_the_cert_authority_line(project, capsys, slurm_cluster):
    ca = slurm_cluster / "ssh" / "host_ca.pub"
    if not ca.is_file():
        pytest.skip("this test cluster's sshd presents no host certificate")
    (project / "known_hosts").write_text(f"@cert-authority [127.0.0.1]:2222 {ca.read_text().strip()}\n")
    override(project, f"ssh:\n  known_hosts: {project / 'known_hosts'}\n")
    code, by_check, lines = doctor(capsys, "docker")
    assert code == 0, lines
    assert "presents a ssh-ed25519-cert-v01@openssh.com host certificate for ssh-ed25519 SHA256:" in by_check["host key"]
    assert f"trusted by the @cert-authority line {project / 'known_hosts'}:1" in by_check["host key"]


def test_a_client_key_the_site_does_not_know(project, capsys):
    key = keygen(project / "stranger")
    override(project, f"ssh:\n  key_file: {key}\n")
    code, by_check, lines = doctor(capsys, "docker")
    assert code == 1
    assert by_check["host key"].startswith("✓ host key: 127.0.0.1:2222 presents ssh-ed25519 SHA256:"), lines
    assert "known_hosts:1" in by_check["host key"]
    auth = by_check["authentication"]
    assert auth.startswith("✗ authentication: authentication as slurmuser on 127.0.0.1:2222 failed")
    assert f"the public half of {key} is registered with the site" in auth
    assert by_check["quota"] == "- quota: skipped (needs authentication)"


def test_an_expired_certificate(project, capsys):
    key, ca = keygen(project / "me"), keygen(project / "ca")
    subprocess.run(["ssh-keygen", "-q", "-s", ca, "-I", "me", "-n", "slurmuser", "-V", "20200101:20200102", key + ".pub"], check=True)
    override(project, f"ssh:\n  auth: certificate\n  key_file: {key}\n  certificate_file: {key}-cert.pub\n")
    code, by_check, lines = doctor(capsys, "docker")
    assert code == 1
    assert by_check["certificate"].startswith(f"✗ certificate: SSH certificate {key}-cert.pub expired at 2020-01-02"), lines
    assert "— fix: renew it (for step-ca: step ssh certificate" in by_check["certificate"]
    assert by_check["host key"] == "- host key: skipped (needs certificate)"


def _module_command_on_cluster(slurm_cluster) -> bool:
    out = ssh_as_user(slurm_cluster, "command -v module >/dev/null 2>&1 || source /etc/profile >/dev/null 2>&1; command -v module || true")
    return bool(out.strip())


def test_a_broken_site_profile_reports_each_problem_on_its_line(project, capsys, slurm_cluster):
    # One profile, one broken thing per line (one doctor run keeps this file fast); the rest stays green.
    (project / "clusters" / "broken.yaml").write_text(
        "extends: docker\n"
        "slurm:\n"
        "  account: nosuch_acct\n"                                  # not associated with slurmuser
        "  partitions:\n"
        "    cpu: {partition: nosuch}\n"                            # no such partition
        "    gpu: {qos: zen3_1024}\n"                               # a QoS the user has, but partition gpu does not accept
        "    debug: {max_time: '01:00:00'}\n"                       # partition debug's MaxTime is 30:00
        "    ghost: {partition: cpu, qos: nosuchqos}\n"             # no such QoS
        "environment:\n"
        "  modules: [nosuch/1.0]\n"                                 # no such module
        "paths:\n"
        "  base_dir: /usr/share/hpc-doctor-test\n"                 # root's: cannot be created
        "  data_dir: /usr/share\n"                                  # exists, not writable
    )
    code, by_check, lines = doctor(capsys, "broken")
    text = "\n".join(lines)
    assert code == 1
    for ok in ("profile", "host key", "authentication", "quota"):
        assert by_check[ok].startswith("✓ "), text
    assert by_check["account"].startswith(
        "✗ account: nosuch_acct (clusters/broken.yaml:3 slurm.account) is not associated with user slurmuser (their accounts: "), text
    assert "or ask the site to add slurmuser to nosuch_acct" in by_check["account"]
    assert by_check["base dir"].startswith("✗ base dir: /usr/share/hpc-doctor-test does not exist and cannot be created: mkdir: ")
    assert "Permission denied — fix: set paths.base_dir (clusters/broken.yaml:12 paths.base_dir) to a directory you can write" in by_check["base dir"]
    assert by_check["data dir"].startswith("✗ data dir: /usr/share exists but is not writable: ")
    assert by_check["partition class cpu"].startswith("✗ partition class cpu: partition nosuch does not exist (there are: ")
    assert "set clusters/broken.yaml:5 slurm.partitions.cpu.partition to one of them" in by_check["partition class cpu"]
    assert by_check["partition class gpu"] == (
        "✗ partition class gpu: partition gpu does not accept QoS zen3_1024 (AllowQos=normal) — fix: set "
        "clusters/broken.yaml:6 slurm.partitions.gpu.qos to a QoS the partition accepts")
    assert by_check["partition class debug"] == (
        "✗ partition class debug: max_time 01:00:00 (clusters/broken.yaml:7 slurm.partitions.debug.max_time) exceeds the "
        "MaxTime 00:30:00 of partition debug — fix: lower slurm.partitions.debug.max_time to at most 00:30:00")
    assert by_check["partition class ghost"].startswith("✗ partition class ghost: QoS nosuchqos does not exist (there are: ")
    if _module_command_on_cluster(slurm_cluster):
        assert by_check["modules"] == (
            "✗ modules: nosuch/1.0: ERROR: Unable to locate a modulefile for 'nosuch/1.0' — fix: correct "
            "clusters/broken.yaml:10 environment.modules; `module avail <name>` or `module spider <name>` on the login node lists what exists")
    else:
        assert by_check["modules"].startswith("✗ modules: the login node has no `module` command (not in a plain shell, nor after sourcing /etc/profile)")
    code, by_check, _ = doctor(capsys, "broken", "--submit")
    assert by_check["test jobs"] == "- test jobs: skipped (needs account)"


def test_a_data_dir_under_a_variable_the_login_shell_does_not_set(project, capsys):
    override(project, "paths:\n  data_dir: $HPC_DOCTOR_NOPE/data\n")
    code, by_check, lines = doctor(capsys, "docker")
    assert code == 1 and by_check["base dir"].startswith("✓ base dir: "), lines
    assert by_check["data dir"].startswith(
        "✗ data dir: $HPC_DOCTOR_NOPE/data: $HPC_DOCTOR_NOPE is not set in the login shell on the cluster — fix: set paths.data_dir")


def test_job_environments_build_and_import_what_each_workload_needs(project, capsys):
    # Both environments of the example project: the base one and Docling's, each loading the site's Python module.
    report = json.loads("\n".join(doctor(capsys, "docker", "--json")[2]))
    details = [r["detail"] for r in report if r["check"] == "job environment"]
    assert len(details) == 2 and all("loads python/3.11.2" in d for d in details), details
    assert any("defs/numbers" in d and "imports dagster_pipes" in d for d in details)
    assert any("defs/documents" in d and "docling" in d and "ray" in d for d in details)


def test_job_environment_failures_name_the_cause(project, capsys):
    # A workload that imports what its environment lacks.
    (project / "workloads" / "draw_numbers.py").write_text(
        "import hpc_missing_package\n" + (project / "workloads" / "draw_numbers.py").read_text())
    # A Python module no site has, on a variant profile used by one component.
    (project / "clusters" / "nopython.yaml").write_text("extends: docker\nenvironment:\n  venv: {modules: ['python/9.9*']}\n")
    report = json.loads("\n".join(doctor(capsys, "docker", "--json")[2]))
    failures = [r for r in report if r["check"] == "job environment" and not r["ok"]]
    assert len(failures) == 1, report
    assert "cannot import what the workload needs: hpc_missing_package (ModuleNotFoundError" in failures[0]["detail"]
    assert "requirements.txt" in failures[0]["fix"]

    report = json.loads("\n".join(doctor(capsys, "nopython", "--json")[2]))
    failures = [r for r in report if r["check"] == "job environment" and not r["ok"]]
    assert failures and all("no module matches python/9.9*; module avail python lists: " in f["detail"] for f in failures), failures
    assert "python/3.11.2" in failures[0]["detail"] and "hpc doctor" in failures[0]["fix"]

    # A package the index does not have: the installer's own words.
    (project / "workloads" / "requirements.txt").write_text("dagster-pipes==1.13.27\nhpc-no-such-package-xyz==1.0\n")
    report = json.loads("\n".join(doctor(capsys, "docker", "--json")[2]))
    failures = [r for r in report if r["check"] == "job environment" and not r["ok"]]
    assert any("hpc-no-such-package-xyz" in f["detail"] for f in failures), failures
