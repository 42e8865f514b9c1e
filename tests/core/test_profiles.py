import shutil
from pathlib import Path

import pytest

from components.core.errors import ConfigError
from components.core.profiles import available_profiles, load_profile

SITES = ["docker", "docker-otp", "leonardo", "local", "musica", "vsc5", "vsc5-otp"]


def test_every_shipped_profile_loads(clusters_dir):
    assert available_profiles(clusters_dir) == SITES
    for name in SITES:
        assert load_profile(name, clusters_dir).name == name


def test_site_facts_are_data(clusters_dir):
    vsc5 = load_profile("vsc5", clusters_dir)
    assert vsc5.ssh.port == 27
    gpu = vsc5.slurm.partitions["gpu"]
    assert (gpu.partition, gpu.qos, gpu.gpus_per_node) == ("zen3_0512_a100x2", "zen3_0512_a100x2", 2)
    assert "mem" in gpu.omit_directives
    musica = load_profile("musica", clusters_dir)
    assert musica.slurm.qos_required
    assert all(c.qos for c in musica.slurm.partitions.values())
    leonardo = load_profile("leonardo", clusters_dir)
    assert leonardo.ssh.auth == "certificate"
    # Port 22 takes password + SMS code, for a 12 h session (docs.vsc.ac.at, 2FA).
    otp = load_profile("vsc5-otp", clusters_dir)
    assert (otp.ssh.port, otp.ssh.auth, otp.ssh.key_file, otp.ssh.session_lifetime) == (22, "password_otp", None, "12:00:00")
    assert otp.slurm.partitions == vsc5.slurm.partitions
    assert leonardo.slurm.partitions["gpu_debug"].qos == "boost_qos_dbg"
    assert leonardo.environment.env["HF_HUB_OFFLINE"] == "1"


@pytest.fixture
def clusters(tmp_path, clusters_dir) -> Path:
    dest = tmp_path / "clusters"
    shutil.copytree(clusters_dir, dest)
    return dest


def _error(clusters: Path, name: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_profile(name, clusters)
    return info.value


def test_unknown_key_names_file_line_and_key(clusters):
    path = clusters / "vsc5.yaml"
    text = path.read_text().replace("    cpu:\n      description", "    cpu:\n      partiton: typo\n      description", 1)
    path.write_text(text)
    line = text.splitlines().index("      partiton: typo") + 1
    err = _error(clusters, "vsc5")
    assert str(err).startswith(f"clusters/vsc5.yaml:{line}") or f"vsc5.yaml:{line}" in str(err)
    assert "unknown key 'partiton'" in str(err)
    assert "slurm.partitions.cpu.partiton" in str(err)
    assert "fix:" in str(err)


def test_invalid_yaml_names_line(clusters):
    (clusters / "broken.yaml").write_text("template: base.sh.j2\nslurm: [unclosed\n")
    err = _error(clusters, "broken")
    assert "broken.yaml:" in str(err) and "invalid YAML" in str(err)


def test_duplicate_key_is_an_error(clusters):
    (clusters / "dup.yaml").write_text("template: local.sh.j2\nscheduler: local\nscheduler: slurm\n")
    err = _error(clusters, "dup")
    assert "duplicate key 'scheduler'" in str(err) and "dup.yaml:3" in str(err)


def test_missing_partition_class_mapping(clusters):
    path = clusters / "docker.yaml"
    path.write_text(path.read_text().replace("default_partition_class: cpu", "default_partition_class: bigmem"))
    err = _error(clusters, "docker")
    assert "default_partition_class 'bigmem' has no mapping" in str(err)
    assert "docker.yaml:" in str(err)


def test_class_time_over_site_maximum(clusters):
    path = clusters / "musica.yaml"
    path.write_text(path.read_text().replace('max_time: "00:10:00"', 'max_time: "5-00:00:00"', 1))
    err = _error(clusters, "musica")
    assert "exceeds the site's max_time" in str(err)


def test_qos_required(clusters):
    path = clusters / "musica.yaml"
    path.write_text(path.read_text().replace("      qos: zen4_0768\n", "", 1))
    err = _error(clusters, "musica")
    assert "has no qos" in str(err) and "musica.yaml:" in str(err)


def test_bad_memory_in_profile(clusters):
    path = clusters / "docker.yaml"
    path.write_text(path.read_text().replace("mem_per_node: 4G", "mem_per_node: 4XB", 1))
    err = _error(clusters, "docker")
    assert "not a size" in str(err) and "mem_per_node" in str(err)


def test_injection_in_profile_values_rejected(clusters):
    path = clusters / "docker.yaml"
    path.write_text(path.read_text().replace("partition: cpu", "partition: cpu$(touch /tmp/pwned)", 1))
    err = _error(clusters, "docker")
    assert "not allowed" in str(err) and "partition" in str(err)


def test_extends_and_project_override(clusters):
    (clusters / "mysite.yaml").write_text(
        "extends: leonardo\ndescription: my group on Leonardo\nslurm:\n  account: EUHPC_X\n"
    )
    (clusters / "overrides" / "mysite.yaml").write_text("slurm:\n  partitions:\n    gpu:\n      qos: boost_qos_dbg\n      max_time: \"00:30:00\"\n")
    profile = load_profile("mysite", clusters)
    assert profile.slurm.account == "EUHPC_X"
    assert profile.slurm.partitions["gpu"].qos == "boost_qos_dbg"
    assert profile.slurm.partitions["gpu"].partition == "boost_usr_prod"  # inherited
    assert profile.ssh.host == "login.leonardo.cineca.it"
    # provenance points at the file that set each key
    assert "overrides/mysite.yaml" in str(profile.location("slurm", "partitions", "gpu", "qos").file)
    assert profile.location("slurm", "partitions", "gpu", "partition").file.name == "leonardo.yaml"


def test_extends_cycle(clusters):
    (clusters / "a.yaml").write_text("extends: b\n")
    (clusters / "b.yaml").write_text("extends: a\n")
    err = _error(clusters, "a")
    assert "cycle" in str(err)
    assert "a -> b -> a" in str(err) and "b.yaml:1" in str(err) and "remove `extends: a`" in err.fix


def test_unknown_key_and_value_name_the_closest_match(clusters):
    (clusters / "overrides" / "vsc5.yaml").write_text("ssh:\n  knwon_hosts: ~/.ssh/site_hosts\n")
    err = _error(clusters, "vsc5")
    assert "unknown key 'knwon_hosts'" in str(err) and "overrides/vsc5.yaml:2" in str(err)
    assert "did you mean 'known_hosts'?" in err.fix and "jump_hosts" in err.fix
    (clusters / "overrides" / "vsc5.yaml").write_text("slurm:\n  partitions:\n    gpu:\n      qoss: x\n")
    assert "did you mean 'qos'?" in _error(clusters, "vsc5").fix
    (clusters / "overrides" / "vsc5.yaml").write_text("scheduler: slrum\n")
    err = _error(clusters, "vsc5")
    assert "'slrum'" in str(err) and "did you mean 'slurm'?" in err.fix


@pytest.mark.parametrize("override, fix", [
    ("ssh:\n  port: abc\n", "whole number"),
    ("slurm: 5\n", "write a mapping"),
    ("environment:\n  modules: x\n", "write a list"),
    ("slurm:\n  default_time: 1:00:00\n", "quote it"),
    ("scheduler: 5\n", "use one of: slurm, local"),
])
def test_a_wrong_type_says_what_to_write(clusters, override, fix):
    (clusters / "overrides" / "vsc5.yaml").write_text(override)
    err = _error(clusters, "vsc5")
    assert "overrides/vsc5.yaml" in str(err) and err.fix and fix in err.fix


def test_an_override_cannot_change_extends(clusters):
    (clusters / "overrides" / "vsc5.yaml").write_text("slurm:\n  account: p1\nextends: leonardo\n")
    err = _error(clusters, "vsc5")
    assert "overrides/vsc5.yaml:3" in str(err) and "cannot change what a profile extends" in err.problem


def test_unknown_cluster_lists_the_known_ones(clusters):
    err = _error(clusters, "lumi")
    assert "unknown cluster 'lumi'" in str(err)
    assert "leonardo" in err.fix and "vsc5" in err.fix
    assert "did you mean leonardo?" in _error(clusters, "leonrdo").fix


def test_missing_template(clusters):
    path = clusters / "vsc5.yaml"
    path.write_text(path.read_text().replace("template: vsc5.sbatch.j2", "template: nope.j2"))
    err = _error(clusters, "vsc5")
    assert "template 'nope.j2' not found" in str(err)
