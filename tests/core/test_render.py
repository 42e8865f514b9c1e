"""Golden job scripts for every profile, and proof that hostile YAML values stay inert."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path, PurePosixPath

import pytest

from components.core.errors import ConfigError
from components.core.profiles import available_profiles, load_profile
from components.core.render import JobSpec, plan_job, render_script
from components.core.resources import JobResources

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
UPDATE = os.environ.get("UPDATE_GOLDENS") == "1"

JOBS = {
    "cpu": JobResources(cpus_per_task=2, mem="2G", time="00:30:00"),
    "gpu": JobResources(gpus=1, cpus_per_task=2, mem="2G", time="00:30:00"),
    "multinode": JobResources(nodes=2, ntasks=4, cpus_per_task=1, mem="1G", time="00:20:00"),
}
ACCOUNTS = {"VSC5_ACCOUNT": "p71234", "LEONARDO_ACCOUNT": "EUHPC_D20_063", "MUSICA_ACCOUNT": "p72000"}


def _job(resources: JobResources, **kwargs) -> JobSpec:
    defaults = dict(
        name="raw__numbers",
        assets=("raw/numbers",),
        workload=PurePosixPath("draw_numbers.py"),
        args=("--count", "100"),
        env=(("OMP_NUM_THREADS", "2"),),
        forward_env=("HF_TOKEN",),
        resources=resources,
    )
    return JobSpec(**{**defaults, **kwargs})


def _normalise(text: str, clusters_dir: Path) -> str:
    # The local profile runs the current interpreter and writes under the project: machine-specific.
    return text.replace(sys.executable, "<python>").replace(str(clusters_dir.parent.resolve()), "<project>")


def _check_golden(name: str, text: str) -> None:
    golden = GOLDEN / name
    if UPDATE or not golden.exists():
        golden.write_text(text)
        if not UPDATE:
            pytest.fail(f"wrote missing golden {golden.name}; review and commit it")
    assert text == golden.read_text(), f"rendered script differs from {golden}; UPDATE_GOLDENS=1 to accept"
    subprocess.run(["bash", "-n"], input=text, text=True, check=True)


@pytest.mark.parametrize("job", sorted(JOBS))
@pytest.mark.parametrize("cluster", ["local", "docker", "vsc5", "leonardo", "musica"])
def test_golden_scripts(cluster, job, clusters_dir, monkeypatch):
    for name, value in ACCOUNTS.items():
        monkeypatch.setenv(name, value)
    plan = plan_job(load_profile(cluster, clusters_dir), _job(JOBS[job]), strict=True)
    text = _normalise(render_script(plan, clusters_dir), clusters_dir)
    _check_golden(f"{cluster}-{job}.sh", text)


def test_every_directive_names_its_setting(clusters_dir, monkeypatch):
    monkeypatch.setenv("LEONARDO_ACCOUNT", "EUHPC_D20_063")
    plan = plan_job(load_profile("leonardo", clusters_dir), _job(JOBS["gpu"]))
    text = render_script(plan, clusters_dir)
    sbatch = [line.removeprefix("#SBATCH ") for line in text.splitlines() if line.startswith("#SBATCH ")]
    assert len(sbatch) == len(plan.directives) >= 10
    for directive in plan.directives:
        assert f"#   {directive.option} <- {directive.source}" in text
    assert "--partition=boost_usr_prod <- clusters/leonardo.yaml:" in text
    assert "--account=EUHPC_D20_063 <- $LEONARDO_ACCOUNT" in text


def test_site_rules(clusters_dir, monkeypatch):
    vsc5 = render_script(plan_job(load_profile("vsc5", clusters_dir), _job(JOBS["gpu"])), clusters_dir)
    assert "#SBATCH --mem" not in vsc5 and "#SBATCH --nodes" not in vsc5
    assert "--mem=2G requested but not set" in vsc5
    musica = render_script(plan_job(load_profile("musica", clusters_dir), _job(JOBS["cpu"])), clusters_dir)
    assert "#SBATCH --qos=zen4_0768" in musica and "#SBATCH --nodes" not in musica
    multi = render_script(plan_job(load_profile("leonardo", clusters_dir), _job(JOBS["multinode"])), clusters_dir)
    assert "\nsrun python3 -u workloads/draw_numbers.py" in multi


def test_required_account_is_enforced_for_submission(clusters_dir):
    profile = load_profile("leonardo", clusters_dir)
    preview = plan_job(profile, _job(JOBS["cpu"]))
    assert preview.warnings and "LEONARDO_ACCOUNT" in preview.warnings[0]
    with pytest.raises(ConfigError, match="requires a project account"):
        plan_job(profile, _job(JOBS["cpu"]), strict=True)


HOSTILE = [
    "$(touch {marker})",
    "`touch {marker}`",
    "'; touch {marker}; echo '",
    '"; touch {marker}; echo "',
    "line1\ntouch {marker}",
    "${{IFS}}touch${{IFS}}{marker}",
]


@pytest.mark.parametrize("cluster", ["local", "docker", "leonardo", "musica"])
def test_hostile_values_are_inert_when_the_script_runs(cluster, clusters_dir, tmp_path, monkeypatch):
    """Run the rendered script for real: hostile args and env values arrive verbatim, nothing executes."""
    for name, value in ACCOUNTS.items():
        monkeypatch.setenv(name, value)
    marker = tmp_path / "pwned"
    values = [h.format(marker=marker) for h in HOSTILE]
    job_dir = tmp_path / "job"
    (job_dir / "workloads").mkdir(parents=True)
    (job_dir / "workloads" / "echo_args.py").write_text(
        "import json, os, sys\n"
        "print(json.dumps({'args': sys.argv[1:], 'env': [os.environ[f'V{i}'] for i in range(%d)]}))\n" % len(values)
    )
    job = _job(
        JOBS["cpu"],
        name="$(touch x)`y`",
        assets=("a/$(touch z)",),
        workload=PurePosixPath("echo_args.py"),
        args=tuple(values),
        env=tuple((f"V{i}", v) for i, v in enumerate(values)),
    )
    script = render_script(plan_job(load_profile(cluster, clusters_dir), job), clusters_dir)
    if cluster != "local":
        script = script.replace("python3 -u", f"{sys.executable} -u")
    (job_dir / "job.sh").write_text(script)
    result = subprocess.run(["bash", "job.sh"], cwd=job_dir, capture_output=True, text=True, env={**os.environ, "DATA": str(tmp_path), "WORK": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    import json

    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen == {"args": values, "env": values}
    assert not marker.exists()
    assert "#SBATCH --job-name=touch_x_y" in script or cluster == "local"


def test_hostile_directive_values_are_rejected():
    with pytest.raises(ValueError, match="not allowed"):
        JobResources(extra_directives=("--comment=ok\n#SBATCH --uid=0",))
    with pytest.raises(ValueError, match="is not valid"):
        _job(JOBS["cpu"], env=(("BAD NAME", "x"),))


def test_templates_quote_unmarked_values(clusters_dir, tmp_path):
    """A user template that forgets to quote still cannot inject: plain strings are quoted on output."""
    from components.core.render import template_environment

    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "t.j2").write_text("echo {{ value }}\n")
    env = template_environment(tmp_path)
    assert env.get_template("t.j2").render(value="$(id)") == "echo '$(id)'\n"


def test_all_profiles_render_the_example(clusters_dir):
    for name in available_profiles(clusters_dir):
        text = render_script(plan_job(load_profile(name, clusters_dir), _job(JOBS["cpu"])), clusters_dir)
        assert text.startswith("#!/bin/bash\n")


@pytest.mark.parametrize("cluster", ["docker", "vsc5", "leonardo", "musica"])
def test_ray_launcher_brings_up_a_cluster_with_site_quirks(cluster, clusters_dir, monkeypatch):
    for name, value in ACCOUNTS.items():
        monkeypatch.setenv(name, value)
    job = _job(JobResources(nodes=2, cpus_per_task=2, mem="2G", time="00:30:00"), launcher="ray",
               workload=PurePosixPath("convert_documents.py"), args=(), ray_object_store_bytes=2 << 30)
    text = _normalise(render_script(plan_job(load_profile(cluster, clusters_dir), job, strict=True), clusters_dir), clusters_dir)
    _check_golden(f"{cluster}-ray.sh", text)
    # One Ray node per Slurm node; the driver runs once, in the batch script, not under srun.
    assert "#SBATCH --ntasks=2" in text and "--object-store-memory=2147483648" in text
    assert "\npython3 -u workloads/convert_documents.py\n" in text or "\npython -u workloads/convert_documents.py\n" in text
    # The auth token is made when the job starts: never part of the script.
    assert "export RAY_AUTH_MODE=token" in text and "RAY_AUTH_TOKEN=$(od " in text
    assert ("--cpu-bind=none" in text) == (cluster == "leonardo")
    assert ("ulimit -n 65536" in text) == (cluster == "musica")


def test_ray_launcher_runs_no_bring_up_locally(clusters_dir):
    job = _job(JobResources(nodes=1, cpus_per_task=2), launcher="ray", workload=PurePosixPath("convert_documents.py"))
    text = render_script(plan_job(load_profile("local", clusters_dir), job), clusters_dir)
    # Locally the driver starts Ray itself, sized by the component's ray options.
    assert "ray start" not in text and "RAY_ADDRESS" not in text
