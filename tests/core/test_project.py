"""[tool.hpc] in pyproject.toml: the project's default cluster and its user/account variables."""

from __future__ import annotations

import shutil
from pathlib import Path, PurePosixPath

import pytest

from components.core.errors import ConfigError
from components.core.profiles import load_profile, resolve_cluster_name
from components.core.project import load_settings
from components.core.render import JobSpec, plan_job, render_script
from components.core.resources import JobResources
from components.core.ssh import target_for
from tests.conftest import ROOT


def _project(tmp_path: Path, table: str) -> Path:
    (tmp_path / "pyproject.toml").write_text(f'[project]\nname = "x"\n\n[tool.hpc]\n{table}\n')
    shutil.copytree(ROOT / "clusters", tmp_path / "clusters", ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def _job() -> JobSpec:
    return JobSpec(name="numbers", assets=("raw/numbers",), workload=PurePosixPath("draw_numbers.py"),
                   launcher="python", resources=JobResources(time="00:10:00"))


def test_settings_are_read_with_their_lines(tmp_path):
    root = _project(tmp_path, 'cluster = "vsc5"\nuser_env = "LAB_USER"\naccount_env = "LAB_ACCOUNT"')
    settings = load_settings(root)
    assert (settings.cluster, settings.user_env, settings.account_env) == ("vsc5", "LAB_USER", "LAB_ACCOUNT")
    assert settings.location("account_env").line == 7


def test_no_table_or_no_pyproject_means_no_settings(tmp_path):
    assert load_settings(tmp_path).cluster is None
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n')
    assert load_settings(tmp_path) == load_settings(tmp_path)
    assert load_settings(tmp_path).user_env is None


@pytest.mark.parametrize(("table", "message", "line"), [
    ('clusters = "vsc5"', "unknown key 'clusters'", 5),
    ('user_env = "LAB-USER"', "not valid", 5),
    ('cluster = "../etc"', "not a profile name", 5),
    ("cluster = 5", "non-empty string", 5),
])
def test_bad_settings_name_the_key_and_line(tmp_path, table, message, line):
    root = _project(tmp_path, table)
    with pytest.raises(ConfigError, match=message) as info:
        load_settings(root)
    assert info.value.location.line == line and info.value.location.key.startswith("tool.hpc.")
    assert "pyproject.toml:5" in str(info.value)


def test_cluster_precedence(tmp_path, monkeypatch):
    root = _project(tmp_path, 'cluster = "vsc5"')
    assert resolve_cluster_name(None, root) == "vsc5"
    monkeypatch.setenv("HPC_CLUSTER", "musica")
    assert resolve_cluster_name(None, root) == "musica"
    assert resolve_cluster_name("leonardo", root) == "leonardo"
    monkeypatch.delenv("HPC_CLUSTER")
    assert resolve_cluster_name(None, tmp_path / "elsewhere") == "local"


def test_forced_cluster_wins_over_an_assets_own(tmp_path, monkeypatch):
    root = _project(tmp_path, 'cluster = "vsc5"')
    monkeypatch.setenv("HPC_CLUSTER", "musica")
    monkeypatch.setenv("HPC_FORCE_CLUSTER", "local")
    assert resolve_cluster_name("leonardo", root) == "local"
    assert resolve_cluster_name(None, root) == "local"
    monkeypatch.setenv("HPC_FORCE_CLUSTER", "vsc7")
    with pytest.raises(ConfigError, match=r"\$HPC_FORCE_CLUSTER=vsc7 names no profile") as info:
        resolve_cluster_name("leonardo", root)
    assert "unset HPC_FORCE_CLUSTER" in info.value.fix and "vsc5" in info.value.fix


def test_unknown_default_cluster_points_at_pyproject(tmp_path, monkeypatch):
    root = _project(tmp_path, 'cluster = "vsc6"')
    with pytest.raises(ConfigError, match="default cluster 'vsc6' has no profile") as info:
        resolve_cluster_name(None, root)
    assert info.value.location.line == 5 and "vsc5" in info.value.fix
    monkeypatch.setenv("HPC_CLUSTER", "vsc7")
    with pytest.raises(ConfigError, match=r"\$HPC_CLUSTER=vsc7 names no profile") as info:
        resolve_cluster_name(None, root)
    assert "unset HPC_CLUSTER" in info.value.fix


def test_a_cluster_from_the_environment_blames_the_variable_and_names_the_closest(tmp_path, monkeypatch):
    root = _project(tmp_path, 'cluster = "vsc5"')
    monkeypatch.setenv("HPC_CLUSTER", "leonrdo")
    assert resolve_cluster_name("musica", root) == "musica"  # an asset's own cluster: wins over the variable
    with pytest.raises(ConfigError) as info:
        resolve_cluster_name(None, root)
    error = info.value
    assert error.location.variable == "HPC_CLUSTER" and error.location.file is None and error.location.key is None
    assert "environment variable HPC_CLUSTER" in error.fix and error.fix.startswith("did you mean leonardo?")


def test_invalid_toml_names_line_and_column(tmp_path):
    root = _project(tmp_path, 'cluster = "vsc5')
    with pytest.raises(ConfigError) as info:
        load_settings(root)
    assert info.value.location.file.name == "pyproject.toml" and info.value.location.line == 5
    assert "not valid TOML at column" in info.value.problem and "closing quote" in info.value.fix


def test_project_account_variable_is_the_fallback(tmp_path, monkeypatch):
    root = _project(tmp_path, 'account_env = "LAB_ACCOUNT"')
    profile = load_profile("leonardo", root / "clusters")
    assert profile.account_envs() == ["LEONARDO_ACCOUNT", "LAB_ACCOUNT"]
    warning = plan_job(profile, _job()).warnings[0]
    assert "$LEONARDO_ACCOUNT or $LAB_ACCOUNT" in warning
    monkeypatch.setenv("LAB_ACCOUNT", "p1")
    text = render_script(plan_job(profile, _job(), strict=True), root / "clusters")
    assert "--account=p1 <- $LAB_ACCOUNT (pyproject.toml tool.hpc.account_env)" in text
    monkeypatch.setenv("LEONARDO_ACCOUNT", "p2")
    assert "#SBATCH --account=p2" in render_script(plan_job(profile, _job()), root / "clusters")


def test_a_literal_account_in_the_profile_beats_the_project_variable(tmp_path, monkeypatch):
    root = _project(tmp_path, 'account_env = "LAB_ACCOUNT"')
    (root / "clusters" / "overrides" / "musica.yaml").write_text("slurm:\n  account: fixed\n")
    monkeypatch.setenv("LAB_ACCOUNT", "p1")
    assert load_profile("musica", root / "clusters").account() == "fixed"


def test_project_user_variable_is_the_fallback(tmp_path, monkeypatch):
    root = _project(tmp_path, 'user_env = "LAB_USER"')
    profile = load_profile("vsc5", root / "clusters")
    with pytest.raises(ConfigError, match=r"set \$VSC5_USER or \$LAB_USER"):
        target_for(profile)
    monkeypatch.setenv("LAB_USER", "ada")
    assert target_for(profile).login.user == "ada"
    monkeypatch.setenv("VSC5_USER", "grace")
    assert target_for(profile).login.user == "grace"
