"""Environment strategies as they appear in the job script (pixi-pack and apptainer cannot run here)."""

from pathlib import Path, PurePosixPath

import pytest

from components.core.environments import activation, env_dir
from components.core.errors import ConfigError
from components.core.profiles import load_profile
from components.core.render import JobSpec, plan_job, render_script
from components.core.resources import JobResources


@pytest.fixture
def project(tmp_path, clusters_dir):
    import shutil

    shutil.copytree(clusters_dir, tmp_path / "clusters")
    (tmp_path / "workloads").mkdir()
    (tmp_path / "workloads" / "requirements.txt").write_text("dagster-pipes==1.13.27\n")
    (tmp_path / "env.tar").write_bytes(b"packed environment")
    return tmp_path


def _render(project: Path, profile_yaml: str) -> str:
    (project / "clusters" / "site.yaml").write_text("extends: docker\n" + profile_yaml)
    profile = load_profile("site", project / "clusters")
    job = JobSpec(name="x", assets=("x",), workload=PurePosixPath("w.py"), resources=JobResources(time="00:05:00"))
    return render_script(plan_job(profile, job, runtime=activation(profile, project)), project / "clusters")


def test_venv_is_keyed_by_the_requirements_hash(project):
    script = _render(project, "")
    rel = env_dir(load_profile("site", project / "clusters"), project)
    assert rel.startswith("envs/venv-") and f'source "${{HOME}}"/dagster-hpc/{rel}/bin/activate' in script
    (project / "workloads" / "requirements.txt").write_text("dagster-pipes==1.13.27\nnumpy==2.3.0\n")
    assert env_dir(load_profile("site", project / "clusters"), project) != rel


def test_pixi_pack_activates_the_unpacked_environment(project):
    script = _render(project, "environment:\n  strategy: pixi_pack\n  pixi_pack: {archive: env.tar}\n")
    assert "/envs/pixi-" in script and "/activate.sh" in script
    assert "\npython -u workloads/w.py" in script


def test_apptainer_wraps_the_launch(project):
    script = _render(project, "environment:\n  strategy: apptainer\n  apptainer: {image: $WORK/images/app.sif, bind: [/scratch]}\n")
    assert "apptainer exec --bind /scratch \"${WORK}\"/images/app.sif python3 -u workloads/w.py" in script


def test_strategy_without_its_settings_is_an_error(project):
    (project / "clusters" / "site.yaml").write_text("extends: docker\nenvironment:\n  strategy: apptainer\n")
    with pytest.raises(ConfigError, match="environment.apptainer is not set"):
        load_profile("site", project / "clusters")
