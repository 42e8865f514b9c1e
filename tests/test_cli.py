"""`hpc render` and `hpc clusters`, run as a user would."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.conftest import ROOT, VENV_BIN

PROFILES = ["docker", "leonardo", "local", "musica", "vsc5"]


def hpc(*args, cwd=ROOT, env=None):
    return subprocess.run(
        [str(VENV_BIN / "hpc"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(cwd), **(env or {})},
        timeout=120,
    )


@pytest.mark.parametrize("cluster", PROFILES)
def test_render_prints_a_script_for_every_profile(cluster):
    result = hpc("render", "defs/numbers", "--cluster", cluster, env={"LEONARDO_ACCOUNT": "EUHPC_X"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("#!/bin/bash\n")
    assert "workloads/draw_numbers.py --count 5000 --seed 7" in result.stdout
    if cluster != "local":
        assert "#SBATCH --partition=" in result.stdout and "#SBATCH --time=00:05:00" in result.stdout


def test_render_all_clusters_and_warnings():
    result = hpc("render", "defs/summary/defs.yaml", "--all-clusters")
    assert result.returncode == 0, result.stderr
    assert [line for line in result.stdout.splitlines() if line.startswith("# =====")] == [f"# ===== {p} =====" for p in PROFILES]
    assert "no account set for leonardo" in result.stderr


def test_render_strict_fails_like_submission_would():
    result = hpc("render", "defs/numbers", "--cluster", "leonardo", "--strict")
    assert result.returncode == 2
    assert "requires a project account" in result.stderr and "LEONARDO_ACCOUNT" in result.stderr
    assert "Traceback" not in result.stderr


def test_render_strict_refuses_a_job_python_without_dagster_pipes(tmp_path):
    from tests.conftest import copy_project

    project = copy_project(tmp_path)
    (project / "clusters" / "overrides" / "vsc5.yaml").write_text("environment:\n  strategy: preinstalled\n")
    result = hpc("render", "defs/numbers", "--cluster", "vsc5", "--strict", cwd=project, env={"VSC5_ACCOUNT": "p71234"})
    assert result.returncode == 2, result.stdout
    assert "not known to provide dagster_pipes" in result.stderr and "clusters/overrides/vsc5.yaml:2" in result.stderr
    assert "environment.provides" in result.stderr and "Traceback" not in result.stderr
    # A bash workload needs no Pipes client: the same profile renders it.
    assert hpc("render", "defs/summary", "--cluster", "vsc5", "--strict", cwd=project, env={"VSC5_ACCOUNT": "p71234"}).returncode == 0
    # As shipped, the site's venv provides it.
    assert hpc("render", "defs/numbers", "--cluster", "vsc5", "--strict", env={"VSC5_ACCOUNT": "p71234"}).returncode == 0


def test_render_errors_are_one_clear_message():
    result = hpc("render", "defs/numbers", "--cluster", "lumi")
    assert result.returncode == 2
    assert "unknown cluster 'lumi'" in result.stderr and "fix: use one of" in result.stderr
    assert "Traceback" not in result.stderr
    result = hpc("render", "defs/nowhere")
    assert result.returncode == 2 and "not a folder under defs/" in result.stderr


def test_clusters_lists_and_validates(tmp_path):
    result = hpc("clusters")
    assert result.returncode == 0, result.stderr
    assert [line.split()[0] for line in result.stdout.splitlines()] == PROFILES
