"""Files a profile's SSH settings need on this machine: each missing one named at its profile line, with the fix."""

from __future__ import annotations

import shutil

import pytest

from components.core.profile_files import missing_files
from components.core.profiles import load_profile


@pytest.fixture
def clusters(tmp_path, clusters_dir):
    shutil.copytree(clusters_dir, tmp_path / "clusters")
    return tmp_path / "clusters"


def test_every_missing_file_is_named_at_its_key(clusters, tmp_path):
    (clusters / "overrides" / "leonardo.yaml").write_text(
        f"ssh:\n  known_hosts: {tmp_path}/kh\n  key_file: {tmp_path}/key\n  certificate_file: {tmp_path}/key-cert.pub\n")
    problems = {p.location.key: p for p in missing_files(load_profile("leonardo", clusters))}
    assert set(problems) == {"ssh.known_hosts", "ssh.key_file", "ssh.certificate_file"}
    assert [problems[k].location.line for k in ("ssh.known_hosts", "ssh.key_file", "ssh.certificate_file")] == [2, 3, 4]
    assert "ssh-keyscan -p 22 login.leonardo.cineca.it" in problems["ssh.known_hosts"].fix
    (tmp_path / "kh").write_text("")
    (tmp_path / "key").write_text("")
    (tmp_path / "key-cert.pub").write_text("")
    assert missing_files(load_profile("leonardo", clusters)) == []


def test_an_unset_variable_in_a_path_is_named(clusters, monkeypatch):
    monkeypatch.delenv("HPC_TEST_CLUSTER_DIR", raising=False)
    problems = missing_files(load_profile("docker", clusters))
    assert problems and all("$HPC_TEST_CLUSTER_DIR" in p.problem and "export HPC_TEST_CLUSTER_DIR" in p.fix for p in problems)


def test_a_local_profile_needs_no_files(clusters):
    assert missing_files(load_profile("local", clusters)) == []
