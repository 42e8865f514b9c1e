"""`hpc doctor` pieces that need no cluster: Slurm output parsing, time limits, known_hosts lines, the report."""

from __future__ import annotations

import json
import subprocess

import paramiko
import pytest

from components.core import doctor, doctor_site
from components.core import known_hosts as kh
from components.core.doctor_report import CheckResult, exit_code, failed, passed, render_json, render_text, skipped
from components.core.doctor_slurm import assess_account, assess_class, noop_job_command, time_limit
from components.core.doctor_slurm_facts import (
    QosInfo, gpus_per_node, parse_associations, parse_facts, parse_gres, parse_partitions, parse_qos, parse_sacct_jobs, queue_wait_s,
    slurm_time_s,
)
from components.core.profiles import load_profile
from components.core.ssh import Hop, KnownHostsPolicy, SSHTarget
from tests.conftest import ROOT

# Output of the test cluster's Slurm 22.05 (trimmed to the fields that matter plus a few others).
ASSOC = "hpc-test||debug,normal,zen3_1024\np71234|zen3_0512|zen3_0512,zen3_0512_devel\n"
QOS = "normal||\ndebug|00:30:00|DenyOnLimit\ndcgp_qos_lprod|4-00:00:00|DenyOnLimit,PartitionTimeLimit\nzen3_0512||\nzen3_0512_devel|00:10:00|DenyOnLimit\nzen3_1024||\n"
SCONTROL = (
    "PartitionName=cpu AllowGroups=ALL AllowAccounts=ALL AllowQos=normal Default=YES MaxTime=1-00:00:00 Nodes=hpc-node[1-2] State=UP TRES=cpu=4,gres/gpu=8\n"
    "PartitionName=gpu AllowGroups=ALL AllowAccounts=ALL AllowQos=normal MaxTime=1-00:00:00 Nodes=hpc-node[1-2] State=UP\n"
    "PartitionName=debug AllowGroups=ALL AllowAccounts=ALL AllowQos=debug MaxTime=00:30:00 Nodes=hpc-node[1-2] State=UP\n"
    "PartitionName=dcgp_usr_prod AllowAccounts=ALL AllowQos=normal,dcgp_qos_lprod DenyAccounts=banned MaxTime=1-00:00:00 State=UP\n"
    "PartitionName=zen3_0512 AllowAccounts=p71234 AllowQos=ALL MaxTime=UNLIMITED State=UP\n"
)
SINFO_GRES = "cpu|(null)\ngpu|gpu:a100:4(S:0-1)\ngpu|gpu:a40:2,mps:200\ndebug|(null)\ndcgp_usr_prod|(null)\n"


def facts_text(assoc=ASSOC, qos=QOS, scontrol=SCONTROL, gres=SINFO_GRES, assoc_rc=0) -> str:
    parts = {"assoc": (assoc, assoc_rc), "qos": (qos, 0), "partitions": (scontrol, 0), "gres": (gres, 0)}
    return "".join(f"@@{key}\n{text}@@{key}_rc {rc}\n" for key, (text, rc) in parts.items())


@pytest.fixture
def docker():
    return load_profile("docker", ROOT / "clusters")


def test_slurm_times():
    assert slurm_time_s("1-00:00:00") == 86400
    assert slurm_time_s("30:00") == 1800  # sinfo %l: minutes:seconds
    assert slurm_time_s("00:30:00") == 1800
    assert slurm_time_s("UNLIMITED") is None and slurm_time_s("infinite") is None


def test_parse_associations_qos_partitions_gres():
    assoc = parse_associations(ASSOC)
    assert [(a.account, a.partition, sorted(a.qos)) for a in assoc] == [
        ("hpc-test", "", ["debug", "normal", "zen3_1024"]), ("p71234", "zen3_0512", ["zen3_0512", "zen3_0512_devel"])]
    qos = parse_qos(QOS)
    assert qos["debug"] == QosInfo(1800, "00:30:00", frozenset({"DenyOnLimit"}))
    assert qos["normal"].max_wall_s is None and "PartitionTimeLimit" in qos["dcgp_qos_lprod"].flags
    parts = parse_partitions(SCONTROL)
    assert parts["debug"].max_time_s == 1800 and parts["debug"].allow_qos == {"debug"}
    assert parts["cpu"].allow_accounts is None and parts["zen3_0512"].allow_qos is None and parts["zen3_0512"].max_time_s is None
    assert parts["dcgp_usr_prod"].deny_accounts == {"banned"} and parts["zen3_0512"].allow_accounts == {"p71234"}
    gres = parse_gres(SINFO_GRES)
    assert gres["gpu"] == ["gpu:a100:4(S:0-1)", "gpu:a40:2,mps:200"]
    assert gpus_per_node(gres["gpu"]) == 4 and gpus_per_node(gres["cpu"]) == 0
    assert gpus_per_node(["gpu:2(S:0,1),mps:100"]) == 2 and gpus_per_node(["mps:100"]) == 0


def test_failed_commands_are_recorded_not_parsed():
    facts = parse_facts(facts_text(assoc="sacctmgr: error: Problem talking to the database\n", assoc_rc=1))
    assert facts.associations is None and "Problem talking to the database" in facts.errors["assoc"]
    assert facts.partitions is not None and "cpu" in facts.partitions
    # No answer at all (the command timed out): nothing parsed, nothing invented.
    assert parse_facts("").partitions is None


def test_time_limit_takes_the_tighter_limit_unless_the_qos_overrides_the_partition():
    parts, qos = parse_partitions(SCONTROL), parse_qos(QOS)
    assert time_limit(parts["cpu"], qos["normal"], "normal") == (86400, "MaxTime 1-00:00:00 of partition cpu")
    assert time_limit(parts["cpu"], qos["debug"], "debug") == (1800, "MaxWall 00:30:00 of QoS debug")
    # Leonardo's lprod QoS: 4 days on a partition whose MaxTime is 1 day.
    assert time_limit(parts["dcgp_usr_prod"], qos["dcgp_qos_lprod"], "dcgp_qos_lprod")[0] == 4 * 86400
    assert time_limit(parts["zen3_0512"], None, None) == (None, "no limit")


def test_the_docker_profile_passes_on_its_own_cluster(docker):
    facts = parse_facts(facts_text(gres="cpu|gpu:4\ngpu|gpu:4\ndebug|gpu:4\n"))
    lines = {c: assess_class(docker, c, facts) for c in docker.slurm.partitions}
    assert all(r.ok for r in lines.values()), lines
    assert lines["gpu"].detail.endswith("2 of 4 GPUs per node")
    assert "max_time 00:30:00 within MaxTime 00:30:00 of partition debug" in lines["debug"].detail


def test_a_gpu_class_on_a_partition_without_gpu_gres(docker):
    # The test cluster gives every partition GPU GRES, so this case is judged on sinfo output here.
    facts = parse_facts(facts_text(gres="cpu|(null)\ngpu|(null)\ndebug|(null)\n"))
    result = assess_class(docker, "gpu", facts)
    assert not result.ok
    assert "asks for 2 GPUs per node, but the nodes of gpu have no GPU GRES (sinfo %G: (null))" in result.detail
    assert "gpus_per_node: 0" in result.fix and "clusters/docker.yaml" in result.fix
    assert assess_class(docker, "cpu", facts).ok  # a CPU class does not care
    fewer = assess_class(docker, "gpu", parse_facts(facts_text(gres="gpu|gpu:1\n")))
    assert "nodes of gpu have at most 1" in fewer.detail


def test_a_qos_outside_the_association_and_a_partition_of_another_account(tmp_path, docker):
    facts = parse_facts(facts_text(assoc="hpc-test||normal\n"))
    result = assess_class(docker, "debug", facts)  # QoS debug exists, but this user may not use it
    assert not result.ok and "QoS debug is not allowed for your association with account hpc-test (allowed: normal)" in result.detail
    facts = parse_facts(facts_text(scontrol=SCONTROL.replace("PartitionName=cpu AllowGroups=ALL AllowAccounts=ALL", "PartitionName=cpu AllowAccounts=p71234")))
    result = assess_class(docker, "cpu", facts)
    assert not result.ok and "account hpc-test may not use partition cpu" in result.detail


def test_account_association(docker, monkeypatch):
    facts = parse_facts(facts_text())
    assert assess_account(docker, "slurmuser", facts).ok
    monkeypatch.setenv("HPC_DOCKER_ACCOUNT", "p99999")
    result = assess_account(docker, "slurmuser", facts)
    assert not result.ok
    assert result.detail == "p99999 ($HPC_DOCKER_ACCOUNT) is not associated with user slurmuser (their accounts: hpc-test, p71234)"
    assert result.fix.startswith("export HPC_DOCKER_ACCOUNT=<one of hpc-test, p71234>")
    # The class lines do not repeat the account's problem.
    assert assess_class(docker, "cpu", facts).ok


def test_noop_job_command_follows_the_class(docker):
    vsc5 = load_profile("vsc5", ROOT / "clusters")
    assert noop_job_command(docker.slurm.partitions["cpu"], docker) == (
        "sbatch --parsable --job-name=hpc-doctor -p cpu --qos normal -A hpc-test -t 1 -c 1 --mem=100M -o /dev/null --wrap=true")
    gpu = noop_job_command(vsc5.slurm.partitions["gpu"], vsc5)
    assert "--mem" not in gpu and "--gres=gpu:1" in gpu and "-A" not in gpu  # VSC-5 GPU classes omit --mem


def test_sacct_records_and_queue_wait():
    records = parse_sacct_jobs("581|2025-01-31T10:00:00|2025-01-31T10:02:05|COMPLETED\n582|2025-01-31T10:00:01|Unknown|PENDING\n"
                               "583|2025-01-31T10:00:01|2025-01-31T10:00:02|CANCELLED by 1001\n")
    assert records["583"][2] == "CANCELLED"
    assert queue_wait_s(*records["581"][:2]) == 125 and queue_wait_s(*records["582"][:2]) is None


def _host_key(tmp_path, name="host"):
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / name)], check=True)
    return paramiko.Ed25519Key.from_private_key_file(str(tmp_path / name))


def _host_key_line(known, host: str, port: int, key) -> CheckResult:
    policy = KnownHostsPolicy(SSHTarget(Hop(host, port, "me"), known_hosts=str(known)), Hop(host, port, "me"))
    return doctor.host_key_result(policy, key)


def test_the_host_key_line_names_the_known_hosts_line_that_pins_the_key(tmp_path):
    key, other = _host_key(tmp_path), _host_key(tmp_path, "other")
    known = tmp_path / "known_hosts"
    hashed = paramiko.HostKeys.hash_host("login.example.org")
    known.write_text(
        "# comment\n\n"
        f"[127.0.0.1]:2222 {other.get_name()} {other.get_base64()}\n"  # another key for the host: no match
        f"[127.0.0.1]:2222 {key.get_name()} {key.get_base64()}\n"
        f"{hashed} {key.get_name()} {key.get_base64()}\n"
        f"*.cluster.org,!bad.cluster.org {key.get_name()} {key.get_base64()}\n"
        f"@revoked old.example.org {key.get_name()} {key.get_base64()}\n"
    )
    line = _host_key_line(known, "127.0.0.1", 2222, key)
    assert line.ok and line.detail.startswith(f"127.0.0.1:2222 presents ssh-ed25519 {kh.fingerprint(key.asbytes())}, pinned at {known}:4; ")
    assert "to verify it out of band, compare it with the fingerprint" in line.detail
    assert not _host_key_line(known, "127.0.0.1", 22, key).ok  # '[127.0.0.1]' is not a pattern class
    assert f"pinned at {known}:5;" in _host_key_line(known, "login.example.org", 22, key).detail
    assert f"pinned at {known}:6;" in _host_key_line(known, "a.cluster.org", 22, key).detail
    assert not _host_key_line(known, "bad.cluster.org", 22, key).ok
    revoked = _host_key_line(known, "old.example.org", 22, key)
    assert not revoked.ok and f"is marked @revoked at {known}:7" in revoked.detail
    assert revoked.fix.startswith("do not use this host until its operators confirm a new key")
    missing = _host_key_line(tmp_path / "missing", "127.0.0.1", 2222, key)
    assert not missing.ok and "is not in" in missing.detail and "ssh-keyscan -p 2222 127.0.0.1" in missing.fix


def test_a_host_certificate_is_traced_to_its_cert_authority_line(tmp_path):
    ca = _host_key(tmp_path, "ca")
    _host_key(tmp_path, "host")
    subprocess.run(["ssh-keygen", "-q", "-s", str(tmp_path / "ca"), "-h", "-I", "login", "-n", "login.example.org",
                    str(tmp_path / "host.pub")], check=True)
    key = paramiko.Ed25519Key.from_private_key_file(str(tmp_path / "host"))
    key.load_certificate(str(tmp_path / "host-cert.pub"))
    known = tmp_path / "known_hosts"
    known.write_text(f"@cert-authority *.example.org {ca.get_name()} {ca.get_base64()}\n")
    ca_fingerprint = subprocess.run(["ssh-keygen", "-lf", str(tmp_path / "ca.pub")], capture_output=True, text=True).stdout.split()[1]
    line = _host_key_line(known, "login.example.org", 22, key)
    assert line.ok and line.detail.startswith(
        f"login.example.org:22 presents a ssh-ed25519-cert-v01@openssh.com host certificate for ssh-ed25519 "
        f"{kh.fingerprint(key.asbytes())}, signed by CA {ca_fingerprint}, trusted by the @cert-authority line {known}:1; ")
    assert not _host_key_line(known, "login.other.org", 22, key).ok


def _certificate(tmp_path, validity: str) -> str:
    _host_key(tmp_path, "ca")
    _host_key(tmp_path, "user")
    subprocess.run(["ssh-keygen", "-q", "-s", str(tmp_path / "ca"), "-I", "me", "-n", "me", "-V", validity,
                    str(tmp_path / "user.pub")], check=True)
    return str(tmp_path / "user-cert.pub")


@pytest.mark.parametrize(("validity", "ok", "words"), [
    ("-5m:+3h", True, "min more (until "),  # 2h 59min
    ("-5m:+30m", False, "expires in 2"),  # 29/30 min: less than the hour a job may need
    ("20200101:20200102", False, "expired at 2020-01-02"),
])
def test_certificate_validity(tmp_path, validity, ok, words):
    cert = _certificate(tmp_path, validity)
    ctx = doctor.Context(ROOT, "x", target=SSHTarget(Hop("h", 22, "me"), auth="certificate", key_file=str(tmp_path / "user"),
                                                    certificate_file=cert))
    [result] = doctor.check_certificate_validity(ctx)
    assert result.ok is ok and words in result.detail
    if not ok:
        assert "step ssh certificate" in result.fix


def test_lines_json_and_exit_code():
    results = [passed("profile", "docker"), failed("account", "p1 is not associated", "export X=p2"), skipped("test jobs", "account")]
    assert render_text(results) == ("✓ profile: docker\n✗ account: p1 is not associated — fix: export X=p2\n"
                                    "- test jobs: skipped (needs account)\n")
    assert json.loads(render_json(results)) == [
        {"check": "profile", "ok": True, "detail": "docker", "fix": None},
        {"check": "account", "ok": False, "detail": "p1 is not associated", "fix": "export X=p2"},
        {"check": "test jobs", "ok": None, "detail": "skipped (needs account)", "fix": None},
    ]
    assert exit_code(results) == 1 and exit_code(results[:1]) == 0 and exit_code([results[2]]) == 1


def test_runner_skips_what_a_failed_check_blocks_and_never_raises():
    def boom(ctx):
        raise KeyError("surprise")

    def record(ctx):
        return [passed("late", "ran")]

    checks = [*doctor.CHECKS[:3], doctor.Check("boom", boom, needs=("profile",)), doctor.Check("late", record, needs=("boom",))]
    results = doctor.diagnose("lumi", ROOT, checks=checks)
    assert [r.line().split(":")[0] for r in results] == ["✗ profile", "- certificate", "- host key", "- authentication", "- boom", "- late"]
    assert "unknown cluster 'lumi'" in results[0].detail and "use one of" in results[0].fix
    assert results[2].detail == "skipped (needs profile)"
    results = doctor.diagnose("local", ROOT, checks=[doctor.CHECKS[0], doctor.Check("boom", boom)])
    assert [r.ok for r in results] == [True]  # a local profile: nothing remote to check
    results = doctor.diagnose("local", ROOT, checks=[doctor.Check("boom", boom), doctor.Check("late", record, needs=("boom",))])
    assert results[0] == CheckResult("boom", False, "the check itself failed: KeyError: 'surprise'", "report this with the output of hpc doctor --json")
    assert results[1].ok is None


def test_including_puts_a_check_before_the_submit_checks():
    checks = doctor.including(doctor.Check("job environment", lambda ctx: [], needs=("authentication",)))
    names = [c.name for c in checks]
    assert names[-2:] == ["job environment", "test jobs"] and checks[-1].submit_only
    assert "job environment" not in [c.name for c in doctor.CHECKS]


def _local_bash(command: str):
    from components.core.ssh import CommandResult

    done = subprocess.run(["env", "-i", "PATH=/usr/bin:/bin", "bash", "-c", command], capture_output=True, text=True, timeout=60)
    return CommandResult(done.returncode, done.stdout, done.stderr)


def test_modules_without_a_module_command_say_so():
    result = doctor_site.check_modules(_local_bash, ["gcc/12"], init="/nonexistent/profile")
    assert not result.ok
    assert result.detail == ("the login node has no `module` command (not in a plain shell, nor after sourcing /nonexistent/profile), "
                             "but environment.modules asks for: gcc/12")
    assert doctor_site.check_modules(_local_bash, []).ok


def test_module_error_lines():
    lmod = 'Lmod has detected the following error:  The following module(s) are unknown:\n"gcc/99"\n\nPlease check the spelling'
    assert doctor_site.module_error(lmod) == 'Lmod has detected the following error:  The following module(s) are unknown: "gcc/99"'
    assert doctor_site.module_error("ERROR: Unable to locate a modulefile for 'x/1'\n") == "ERROR: Unable to locate a modulefile for 'x/1'"
    assert doctor_site.module_error("Loading python/3.11\n") == ""


def test_durations():
    from components.core.doctor_report import duration

    assert [duration(s) for s in (5, 125, 3 * 3600 + 720, 2 * 86400 + 3600)] == ["5s", "2min", "3h 12min", "2d 1h"]

