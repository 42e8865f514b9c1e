import pytest

from components.core.errors import ConfigError
from components.core.profiles import load_profile
from components.core.resources import JobResources, place


@pytest.fixture
def leonardo(clusters_dir):
    return load_profile("leonardo", clusters_dir)


@pytest.fixture
def vsc5(clusters_dir):
    return load_profile("vsc5", clusters_dir)


def test_gpu_request_lands_on_gpu_class(leonardo):
    assert place(leonardo, JobResources(gpus=2)).class_name == "gpu"
    assert place(leonardo, JobResources()).class_name == "cpu"


def test_default_time_comes_from_profile(leonardo):
    placement = place(leonardo, JobResources())
    assert placement.time_s == 3600 and "slurm.default_time" in placement.time_source


@pytest.mark.parametrize(
    ("resources", "message", "key"),
    [
        (JobResources(gpus=1, partition_class="cpu"), "which has no GPUs", "resources.gpus"),
        (JobResources(gpus=5), "exceeds the 4 GPUs", "resources.gpus"),
        (JobResources(time="2-00:00:00"), "exceeds the maximum 1-00:00:00", "resources.time"),
        (JobResources(nodes=3, partition_class="debug"), "exceeds max_nodes 2", "resources.nodes"),
        (JobResources(mem="1T"), "exceeds the 512G", "resources.mem"),
        (JobResources(cpus_per_task=200), "exceeds the 112 cores", "resources.cpus_per_task"),
        (JobResources(partition_class="bigmem"), "not defined on cluster 'leonardo'", "resources.partition_class"),
    ],
)
def test_limits(leonardo, resources, message, key):
    with pytest.raises(ConfigError, match=message) as info:
        place(leonardo, resources)
    assert info.value.location.key == key
    assert info.value.fix


def test_vsc5_multi_node_gpu_jobs_take_whole_nodes(vsc5):
    with pytest.raises(ConfigError, match="must take all 2 GPUs"):
        place(vsc5, JobResources(nodes=2, gpus=1))
    assert place(vsc5, JobResources(nodes=2, gpus=2)).class_name == "gpu"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"gpus": -1}, "gpus must be 0 or more"),
        ({"nodes": 0}, "nodes must be at least 1"),
        ({"mem": "10XB"}, "not a size"),
        ({"time": "99:99"}, "seconds must be below 60"),
        ({"extra_directives": ("--comment=x; rm -rf /",)}, "not allowed"),
        ({"partition": "a b"}, "not allowed"),
    ],
)
def test_bad_requests_fail_at_construction(kwargs, message):
    with pytest.raises(ValueError, match=message):
        JobResources(**kwargs)


@pytest.mark.parametrize(
    "option",
    ["--array=0-9", "-a 0-9", "--output=x.log", "-o x.log", "--error=e.log", "-e e.log", "--open-mode=truncate",
     "--chdir=/tmp", "-D /tmp", "--parsable", "--wait", "-W", "--dependency=afterok:1", "-d afterok:1", "--hold", "-H",
     "--kill-on-invalid-dep=yes", "--wrap=true", "--test-only"],
)
def test_directives_that_break_following_a_job_are_refused(option):
    from components.core.resources import ResourceError

    with pytest.raises(ResourceError, match="is refused") as info:
        JobResources(extra_directives=("--constraint=a100", option))
    assert info.value.field == "extra_directives.1"


@pytest.mark.parametrize("option", ["--requeue", "--no-requeue", "--constraint=a100", "--begin=now+60", "-C a100", "--signal=B:USR1@60"])
def test_other_directives_pass(option):
    JobResources(extra_directives=(option,))


def test_profile_extra_directives_are_checked_too(tmp_path, clusters_dir):
    import shutil

    shutil.copytree(clusters_dir, tmp_path / "clusters")
    profile = tmp_path / "clusters" / "docker.yaml"
    profile.write_text(profile.read_text().replace("slurm:\n", "slurm:\n  extra_directives: [--wait]\n", 1))
    with pytest.raises(ConfigError, match="--wait' is refused"):
        load_profile("docker", tmp_path / "clusters")
