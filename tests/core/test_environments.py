"""Environment strategies as they appear in the job script (pixi-pack and apptainer cannot run here)."""

from pathlib import Path, PurePosixPath

import pytest

from components.core.environments import activation, check_job_python, env_dir
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


def test_venv_is_keyed_by_the_requirements_and_the_python_module(project):
    script = _render(project, "")
    rel = env_dir(load_profile("site", project / "clusters"), project)
    assert rel.startswith("envs/venv-") and f'source "${{HOME}}"/dagster-hpc/{rel}/hpc-activate.sh' in script
    (project / "workloads" / "requirements.txt").write_text("dagster-pipes==1.13.27\nnumpy==2.3.0\n")
    assert env_dir(load_profile("site", project / "clusters"), project) != rel
    _render(project, "environment:\n  venv: {modules: [python/3.12.8]}\n")
    assert env_dir(load_profile("site", project / "clusters"), project) not in (rel, None)


@pytest.mark.parametrize("name", ["python/3.12*", "Python/3.1[123]*", "python/3.11.7", "ASC/2025.06"])
def test_venv_modules_take_names_and_globs(project, name):
    _render(project, f"environment:\n  venv: {{modules: ['{name}']}}\n")


@pytest.mark.parametrize("name", ["python*", "python/3;rm -rf ~", "python/$(id)", "py thon/3"])
def test_venv_module_patterns_that_could_inject_are_refused(project, name):
    with pytest.raises(ConfigError, match="environment.venv.modules"):
        _render(project, f"environment:\n  venv: {{modules: ['{name}']}}\n")


def test_a_venv_without_dagster_pipes_is_refused(project):
    (project / "workloads" / "requirements.txt").write_text("numpy==2.3.0\n")
    _render(project, "")
    with pytest.raises(ConfigError, match="does not list dagster-pipes") as err:
        check_job_python(load_profile("site", project / "clusters"), project)
    assert "requirements.txt" in err.value.fix


def test_a_preinstalled_python_must_declare_dagster_pipes(project):
    _render(project, "environment:\n  strategy: preinstalled\n")
    with pytest.raises(ConfigError, match="not known to provide dagster_pipes") as err:
        check_job_python(load_profile("site", project / "clusters"), project)
    assert "clusters/site.yaml" in str(err.value) and "environment.provides" in err.value.fix
    _render(project, "environment:\n  strategy: preinstalled\n  provides: [dagster_pipes]\n")
    check_job_python(load_profile("site", project / "clusters"), project)


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


def test_a_gpu_job_gets_cuda_torch_in_its_own_venv(project):
    from components.core.environments import for_gpus, notes, venv_requirements

    (project / "workloads" / "requirements.txt").write_text("dagster-pipes==1.13.27\n--find-links /opt/wheels\ntorch==2.13.0+cpu\n")
    leonardo = load_profile("leonardo", project / "clusters")
    gpu = for_gpus(leonardo)
    assert venv_requirements(gpu, project).decode().splitlines()[-1] == "torch==2.13.0"
    assert venv_requirements(leonardo, project).decode().splitlines()[-1] == "torch==2.13.0+cpu"
    assert env_dir(gpu, project) != env_dir(leonardo, project)
    # PyTorch's CPU index would offer 2.13.0+cpu for torch==2.13.0 too: GPU venvs use their own indexes.
    assert gpu.environment.venv.extra_index_urls == [] and leonardo.environment.venv.extra_index_urls
    assert any("CUDA 12 build" in n and "cuda/12.2" in n for n in notes(gpu))
    (project / "clusters" / "site.yaml").write_text("extends: leonardo\nenvironment:\n  venv: {gpu_torch: as_locked}\n")
    kept = for_gpus(load_profile("site", project / "clusters"))
    assert venv_requirements(kept, project).decode().splitlines()[-1] == "torch==2.13.0+cpu"
