"""The parsing helpers of bench/ssh_sessions.py, on text captured from the test cluster (Slurm 22.05, OpenSSH)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("bench_ssh_sessions", Path(__file__).resolve().parents[1] / "bench" / "ssh_sessions.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)

SDIAG = """\
*******************************************************
sdiag output at Fri Dec 04 13:15:33 2026 (1796390133)
Data since      Fri Dec 04 13:15:34 2026 (1796390134)
*******************************************************
Server thread count:  3

Remote Procedure Call statistics by message type
	REQUEST_PARTITION_INFO                  ( 2009) count:50     ave_time:177    total_time:8871
	REQUEST_JOB_INFO_SINGLE                 ( 2021) count:26     ave_time:136    total_time:3561
	REQUEST_JOB_USER_INFO                   ( 2039) count:3      ave_time:760    total_time:2281

Remote Procedure Call statistics by user
	slurmuser       (    1001) count:89     ave_time:275    total_time:24518
	root            (       0) count:48     ave_time:446    total_time:21427

Pending RPC statistics
	No pending RPCs
"""

DBD = """\
Data since                    Fri Dec 04 13:08:03 2026 (1796389683)
Remote Procedure Call statistics by message type
	DBD_JOB_COMPLETE         ( 1424) count:153    ave_time:1243   total_time:190182
	DBD_GET_JOBS_COND        ( 1444) count:44     ave_time:1636   total_time:72016

Remote Procedure Call statistics by user
	slurmuser           (      1001) count:162    ave_time:738    total_time:119577
"""


def test_rpc_stats_by_type_and_user():
    stats = bench.parse_rpc_stats(SDIAG)
    assert stats["since"] == "Fri Dec 04 13:15:34 2026 (1796390134)"
    assert stats["types"] == {"REQUEST_PARTITION_INFO": 50, "REQUEST_JOB_INFO_SINGLE": 26, "REQUEST_JOB_USER_INFO": 3}
    assert stats["users"] == {"slurmuser": 89, "root": 48}  # "Pending RPC statistics" is not a user
    assert bench.parse_rpc_stats(DBD)["types"]["DBD_GET_JOBS_COND"] == 44


def test_rpc_delta_sums_names_and_refuses_a_restart():
    before = bench.parse_rpc_stats(SDIAG)
    after = bench.parse_rpc_stats(SDIAG.replace("count:26", "count:40").replace("count:3 ", "count:5 "))
    # REQUEST_JOB_INFO is absent from both readings: it counts 0, not an error.
    assert bench.rpc_delta(before, after, bench.SQUEUE_RPCS) == 14 + 2
    restarted = bench.parse_rpc_stats(SDIAG.replace("13:15:34 2026 (1796390134)", "13:20:00 2026 (1796390400)"))
    assert bench.rpc_delta(before, restarted, bench.SQUEUE_RPCS) is None


def test_tcp_to_port_keeps_established_connections_to_the_port():
    text = (
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
        "   0: 0100007F:08AE 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 144855 1\n"  # listening
        "   1: 0100007F:C94A 0100007F:08AE 01 00000000:00000000 00:00000000 00000000     0        0 2001 1\n"  # ours
        "   2: 0100007F:C94B 0100007F:08AE 06 00000000:00000000 00:00000000 00000000     0        0 0 1\n"  # TIME_WAIT
        "   3: 0100007F:08AE 0100007F:C94A 01 00000000:00000000 00:00000000 00000000     0        0 2002 1\n"  # sshd's end
    )
    assert bench.tcp_to_port(text, 2222) == {2001: 0xC94A}
    assert bench.tcp_to_port(text, 2223) == {}


def test_sshd_events_give_kind_and_client_port():
    lines = [
        "Connection from 127.0.0.1 port 51018 on 127.0.0.1 port 2222 rdomain \"\"",
        "Accepted publickey for slurmuser from 127.0.0.1 port 51018 ssh2: ED25519 SHA256:fsYAC3vk",
        "Starting session: command for slurmuser from 127.0.0.1 port 51018 id 0",
        "Starting session: command for slurmuser from 127.0.0.1 port 51018 id 1",
        "Disconnected from user slurmuser 127.0.0.1 port 51018",
    ]
    assert bench.sshd_events(lines) == [("login", 51018), ("command", 51018), ("command", 51018)]


def test_env_sh_and_medians():
    env = bench.parse_env_sh("# comment\nexport HPC_TEST_SSH_PORT=2222\nexport HPC_TEST_USER='slurmuser'\nPATH=x\n")
    assert env == {"HPC_TEST_SSH_PORT": "2222", "HPC_TEST_USER": "slurmuser"}
    samples = [dict.fromkeys(bench.MEASURES, 1) | {"wall_s": 120.0, "logins": n, "squeue": None} for n in (8, 50, 9)]
    got = bench.medians(samples)
    assert got["logins"] == 9 and got["logins/min"] == pytest.approx(4.5)
    assert got["squeue"] is None and got["squeue/min"] is None  # no valid reading: n/a, not 0
