"""`hpc render` and `hpc clusters`, run as a user would."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT, VENV_BIN

PROFILES = ["docker", "docker-otp", "leonardo", "local", "musica", "vsc5", "vsc5-otp"]


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


def test_render_shows_the_step_as_a_job_step_and_the_runs_allocation(tmp_path):
    from tests.conftest import copy_project

    project = copy_project(tmp_path)
    pyproject = project / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace("[tool.hpc]", '[tool.hpc]\nallocation = "run"', 1))
    result = hpc("render", "defs/numbers", "--cluster", "docker", cwd=project)
    assert result.returncode == 0, result.stderr
    step, _, allocation = result.stdout.partition("# ===== the run's allocation (submission.allocation: run): allocation.sh =====\n")
    assert "\nsrun --job-name=raw__numbers.1 --nodes=1 --ntasks=1 --cpus-per-task=1 --exact --mem=1G --time=00:05:00 " in step
    assert allocation.startswith("#!/bin/bash\n") and "#SBATCH --mem=1G" in allocation
    assert "--cpus-per-task=1 <- allocation sized for steps raw__numbers" in allocation
    # An asset that says job keeps its own job, whatever the project says.
    defs = project / "defs" / "numbers" / "defs.yaml"
    defs.write_text(defs.read_text() + "  submission: {allocation: job}\n")
    result = hpc("render", "defs/numbers", "--cluster", "docker", cwd=project)
    assert "allocation.sh" not in result.stdout and "\nsrun " not in result.stdout


def test_project_allocation_setting_must_be_job_or_run(tmp_path):
    from tests.conftest import copy_project

    project = copy_project(tmp_path)
    pyproject = project / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace("[tool.hpc]", '[tool.hpc]\nallocation = "shared"', 1))
    result = hpc("render", "defs/numbers", "--cluster", "docker", cwd=project)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "allocation 'shared' is not one of job, run" in result.stderr and "pyproject.toml" in result.stderr


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


# --- Every user mistake: one message on stderr, exit 2, no traceback (in-process: milliseconds, not a subprocess) ---


@pytest.fixture
def in_project(project, monkeypatch):
    monkeypatch.chdir(project)
    # dagster finds defs.yaml through the imported `defs` package: import the copy's, not this checkout's.
    monkeypatch.syspath_prepend(str(project))
    for name in [m for m in sys.modules if m == "defs" or m.startswith("defs.") or m == "definitions"]:
        monkeypatch.delitem(sys.modules, name)
    for name in ("HPC_CLUSTER", "HPC_FORCE_CLUSTER"):
        monkeypatch.delenv(name, raising=False)
    return project


def _run(capsys, *argv):
    from components import cli

    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def _edit(path, old, new):
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def test_render_places_a_resource_error_at_its_line(in_project, capsys):
    _edit(in_project / "defs" / "numbers" / "defs.yaml", "mem: 1G", "mem: 1Gx")
    code, _, err = _run(capsys, "render", "defs/numbers")
    assert code == 2
    assert "defs/numbers/defs.yaml:20 [attributes.resources.mem]" in err and "'1Gx' is not a size" in err


def test_render_shows_why_a_component_failed_to_load_and_reads_dotenv(in_project, capsys, monkeypatch):
    monkeypatch.delenv("HPC_PROBE_THREADS", raising=False)
    _edit(in_project / "defs" / "numbers" / "defs.yaml", 'OMP_NUM_THREADS: "1"', "OMP_NUM_THREADS: \"{{ env('HPC_PROBE_THREADS') }}\"")
    code, _, err = _run(capsys, "render", "defs/numbers")
    line = next(n for n, text in enumerate((in_project / "defs" / "numbers" / "defs.yaml").read_text().splitlines(), 1) if "HPC_PROBE" in text)
    assert code == 2 and f"defs/numbers/defs.yaml:{line}: environment variable HPC_PROBE_THREADS is not set" in err
    assert "add HPC_PROBE_THREADS=... to the project's .env" in err
    assert "Error while loading component" not in err
    # .env is read as dg reads it: its values win over the shell's, and only for the command.
    (in_project / ".env").write_text("HPC_PROBE_THREADS=7\nNO_VALUE\n")
    code, out, _ = _run(capsys, "render", "defs/numbers")
    assert code == 0 and "export OMP_NUM_THREADS=7" in out
    assert "HPC_PROBE_THREADS" not in os.environ


def test_render_names_the_other_defs_yaml_that_stops_the_load(in_project, capsys):
    # dagster resolves every component type of the tree: a typo in summary stops rendering numbers.
    _edit(in_project / "defs" / "summary" / "defs.yaml", "components.SlurmAssetComponent", "components.SlurmAsetComponent")
    code, _, err = _run(capsys, "render", "defs/numbers")
    assert code == 2
    assert "defs/summary/defs.yaml:1 [type]: unknown component type 'components.SlurmAsetComponent'" in err
    assert "did you mean components.SlurmAssetComponent?" in err


def test_a_cluster_typo_in_the_environment_blames_the_variable(in_project, capsys, monkeypatch):
    monkeypatch.setenv("HPC_CLUSTER", "leonrdo")
    code, _, err = _run(capsys, "render", "defs/numbers")
    assert code == 2 and "$HPC_CLUSTER=leonrdo names no profile" in err
    assert "environment variable HPC_CLUSTER" in err and "did you mean leonardo?" in err and "defs.yaml" not in err
    monkeypatch.delenv("HPC_CLUSTER")
    for argv in (("render", "defs/numbers", "--cluster", "leonrdo"), ("doctor", "leonrdo")):
        code, _, err = _run(capsys, *argv)
        assert code == 2 and "unknown cluster 'leonrdo'" in err and "did you mean leonardo?" in err


@pytest.mark.parametrize("argv", [("render", "defs/numbers"), ("clusters",), ("doctor", "local")])
def test_invalid_pyproject_is_one_message_for_every_command(in_project, capsys, argv):
    _edit(in_project / "pyproject.toml", 'cluster = "local"', 'cluster = "local')
    code, _, err = _run(capsys, *argv)
    line = next(n for n, text in enumerate((in_project / "pyproject.toml").read_text().splitlines(), 1) if text.startswith("cluster ="))
    assert code == 2 and err.count("error:") == 1
    assert f"pyproject.toml:{line}: not valid TOML at column" in err and "fix:" in err


def test_clusters_flags_a_missing_known_hosts_file_at_its_key(in_project, capsys, tmp_path):
    (in_project / "clusters" / "overrides" / "vsc5.yaml").write_text(f"ssh:\n  known_hosts: {tmp_path}/nowhere/known_hosts\n")
    code, out, err = _run(capsys, "clusters")
    assert code == 0 and "vsc5" in out  # not invalid: nobody may connect from this machine yet
    warning = next(line for line in err.split("  warning: ") if "nowhere/known_hosts" in line)
    assert "clusters/overrides/vsc5.yaml:2 [ssh.known_hosts]" in warning and "does not exist" in warning
    assert "ssh-keyscan -p 27 vsc5.vsc.ac.at" in warning


def test_extends_cycle_in_clusters_is_reported_with_its_fix(in_project, capsys):
    (in_project / "clusters" / "a.yaml").write_text("extends: b\n")
    (in_project / "clusters" / "b.yaml").write_text("extends: a\n")
    code, _, err = _run(capsys, "clusters")
    assert code == 2 and "a -> b -> a" in err and "fix: remove `extends:" in err


def test_render_shows_the_array_of_a_partitioned_asset():
    result = hpc("render", "defs/regions", "--cluster", "docker")
    assert result.returncode == 0, result.stderr
    # All four static keys, at most submission.max_concurrent (2) at once; each task its own files.
    assert "#SBATCH --array=0-3%2\n" in result.stdout
    assert "#SBATCH --output=tasks/%a/slurm-%A_%a.out\n" in result.stdout
    assert '. "$HPC_TASK_DIR/task.env"' in result.stdout and "one array of N tasks" in result.stdout
    local = hpc("render", "defs/regions", "--cluster", "local")
    assert local.returncode == 0 and "--array" not in local.stdout and "HPC_TASK_DIR" not in local.stdout
