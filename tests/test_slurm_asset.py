"""The component as users meet it: dg check defs, dg list components, the scaffolder, bad YAML."""

from __future__ import annotations

import json
import re

import pytest

from tests.conftest import ROOT, build as _build, edit as _edit, line_of as _line, root_cause as _root_cause, run_dg

NUMBERS = "defs/numbers/defs.yaml"


def test_dg_check_defs_passes_on_the_repository():
    result = run_dg(ROOT, "check", "defs")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "All definitions loaded successfully" in result.stdout + result.stderr


def test_dg_list_components_shows_the_component_with_its_description():
    result = run_dg(ROOT, "list", "components", "--json")
    assert result.returncode == 0, result.stderr
    entries = {e["key"]: e for e in json.loads(result.stdout)["items"]}
    entry = entries["components.SlurmAssetComponent"]
    assert "Slurm job" in entry["summary"]
    assert "new and stale samples" in entries["components.MetaxyFeatureComponent"]["summary"]


def test_component_schema_documents_every_field():
    from components import SlurmAssetComponent

    schema = SlurmAssetComponent.get_model_cls().model_json_schema()
    props = schema["properties"]
    for field in ("assets", "checks", "script", "args", "env", "forward_env", "launcher", "resources", "cluster"):
        assert props[field].get("description"), f"{field} has no description"
    resources = schema["$defs"]["SlurmResourcesModel"]["properties"]
    for field in ("nodes", "ntasks", "cpus_per_task", "mem", "gpus", "time", "partition_class", "partition", "qos", "account", "extra_directives"):
        assert resources[field].get("description") and "examples" in resources[field] or field == "exclusive"


@pytest.mark.parametrize(
    ("old", "new", "needle", "message"),
    [
        ("    time: \"00:05:00\"", "    time: \"99:99\"", "time:", "seconds must be below 60"),
        ("    mem: 1G", "    mem: 10XB", "mem:", "is not a size"),
        ("    cpus_per_task: 1", "    cpus_per_task: 1\n    gpus: -1", "gpus:", "gpus must be 0 or more"),
        ("  script: draw_numbers.py", "  script: missing.py", "script:", "workloads/missing.py does not exist"),
        ("  script: draw_numbers.py", "  script: draw_numbers.py\n  cluster: lumi", "cluster:", "unknown cluster 'lumi'"),
        ("    time: \"00:05:00\"", "    time: \"2-00:00:00\"\n  cluster: leonardo", "time:", "exceeds the maximum 1-00:00:00"),
        ("    time: \"00:05:00\"", "    time: \"00:05:00\"\n    gpus: 1\n    partition_class: cpu\n  cluster: vsc5", "gpus:", "which has no GPUs"),
        # sbatch options that would break following the job are refused where they are written
        ("    mem: 1G", "    mem: 1G\n    extra_directives:\n      - --constraint=a100\n      - --array=0-1", "--array", "an array is made from the asset's partitions"),
        ("    mem: 1G", "    mem: 1G\n    extra_directives: [\"-o out.txt\"]", "extra_directives", "stdout must be slurm-%j.out"),
        ("    mem: 1G", "    mem: 1G\n    extra_directives: [--dependency=afterok:12]", "extra_directives", "declare deps instead"),
        ("  script: draw_numbers.py", "  script: draw_numbers.py\n  submission: {outage_tolerance: soon}", "submission:", "submission.outage_tolerance"),
        ("  script: draw_numbers.py", "  script: draw_numbers.py\n  submission: {allocation_idle_timeout: 2m}", "submission:",
         "submission.allocation_idle_timeout"),
        ("  script: draw_numbers.py", "  script: draw_numbers.py\n  submission:\n    allocation_resources: {mem: lots}", "allocation_resources",
         "submission.allocation_resources.mem"),
        ("  script: draw_numbers.py", "  script: draw_numbers.py\n  submission: {allocation: shared}", "submission:", "allocation"),
        ('    OMP_NUM_THREADS: "1"', '    OMP_NUM_THREADS: "1"\n    1BAD: x', "1BAD", "environment variable name '1BAD' is not valid"),
    ],
)
def test_bad_attributes_are_reported_with_file_and_line(project, old, new, needle, message):
    _assert_reported_at(project, NUMBERS, old, new, needle, message)


def _assert_reported_at(project, defs_file: str, old: str, new: str, needle: str, message: str, *, with_fix: bool = False) -> None:
    """Editing defs_file (old -> new) makes loading fail with a ConfigError carrying `message` (and a fix), at the line of `needle`."""
    from components.core.errors import ConfigError

    lines = _edit(project, defs_file, old, new)
    with pytest.raises(Exception) as info:
        _build(project)
    error = _root_cause(info.value)
    assert isinstance(error, ConfigError), repr(error)
    text = str(error)
    assert message in text and ("fix:" in text or not with_fix), text
    assert f"{defs_file}:{_line(lines, needle)}" in text, text


def test_invalid_profile_yaml_names_the_profile_file(project):
    (project / "clusters" / "local.yaml").write_text("scheduler: local\ntemplate: local.sh.j2\nenvironment: [\n")
    with pytest.raises(Exception) as info:
        _build(project)
    text = str(_root_cause(info.value))
    assert "clusters/local.yaml:" in text and "invalid YAML" in text
    assert "used by: " in text and "defs.yaml" in text


def test_dg_check_defs_reports_misspelled_attribute(project):
    lines = _edit(project, NUMBERS, "  script: draw_numbers.py", "  scirpt: draw_numbers.py")
    result = run_dg(project, "check", "defs")
    out = result.stdout + result.stderr
    assert result.returncode != 0
    # dg's own `check yaml` keeps one file per component type (the last it reads), so with several
    # SlurmAssetComponent files this one may reach our check instead; either names the line.
    assert f"defs.yaml:{_line(lines, 'scirpt')}" in out, out
    assert "'scirpt' was unexpected" in out or "unknown key 'scirpt' in attributes" in out, out
    # Wrong types inside resources: tests/test_defs_check.py (dg check defs with several mistakes at once).


def test_schema_reports_a_misspelled_nested_key_by_name():
    # The anyOf[model, template string] dagster derives hid this behind "not valid under any of the given schemas".
    from jsonschema import Draft202012Validator

    from components import SlurmAssetComponent

    validator = Draft202012Validator(SlurmAssetComponent.get_model_cls().model_json_schema())
    attributes = {"assets": [{"key": "a"}], "script": "a.py", "resources": {"cpu_per_task": 2, "time": 5400}}
    (error,) = validator.iter_errors(attributes)
    assert list(error.absolute_path) == ["resources"] and "'cpu_per_task' was unexpected" in error.message


def test_dg_check_defs_prints_our_message_for_semantic_errors(project):
    lines = _edit(project, NUMBERS, "    mem: 1G", "    mem: 10XB")
    result = run_dg(project, "check", "defs")
    out = result.stdout + result.stderr
    assert result.returncode != 0
    assert re.search(rf"defs/numbers/defs.yaml:{_line(lines, 'mem:')} \[attributes.resources.mem\]: memory '10XB' is not a size", out), out
    # Our message alone: not dagster's component tree, and no frame of our code under it.
    assert "Error while loading component" not in out and "The above exception" not in out
    assert "components/" not in out.split("Stack Trace:")[-1], out


def test_scaffolded_asset_checks_and_materializes(project):
    result = run_dg(project, "scaffold", "defs", "components.SlurmAssetComponent", "my_asset")
    assert result.returncode == 0, result.stdout + result.stderr
    assert (project / "defs" / "my_asset" / "defs.yaml").is_file()
    assert (project / "workloads" / "my_asset.py").is_file()
    result = run_dg(project, "check", "defs")
    assert result.returncode == 0, result.stdout + result.stderr
    result = run_dg(project, "launch", "--assets", "my_asset")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "computing my_asset" in result.stdout + result.stderr


def test_a_scaffolded_python_workload_never_shadows_the_standard_library(project):
    import dagster as dg

    from components.slurm_asset import ScaffoldParams, SlurmAssetScaffolder

    target = project / "defs" / "json"
    target.mkdir()
    SlurmAssetScaffolder().scaffold(dg.ScaffoldRequest(type_name="components.SlurmAssetComponent", target_path=target,
                                                       scaffold_format="yaml", project_root=project, params=ScaffoldParams()))
    assert (project / "workloads" / "json_job.py").is_file() and "script: json_job.py" in (target / "defs.yaml").read_text()
    assert dg.AssetKey("json") in _build(project).resolve_all_asset_keys()  # json.py would be refused at load


def test_scaffolder_takes_launcher_and_cluster(project):
    result = run_dg(
        project, "scaffold", "defs", "components.SlurmAssetComponent", "shell_step", "--launcher", "bash", "--cluster", "leonardo"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    text = (project / "defs" / "shell_step" / "defs.yaml").read_text()
    assert "launcher: bash" in text and "cluster: leonardo" in text and "script: shell_step.sh" in text
    assert (project / "workloads" / "shell_step.sh").read_text().startswith("#!/bin/bash")


def test_forced_cluster_overrides_an_assets_own_but_not_a_requested_one(project, monkeypatch):
    # A project's local tests set HPC_FORCE_CLUSTER=local; an asset pinned to a cluster must still run here.
    from components.inventory import load_workload
    from tests.conftest import materialize_ok, use_project

    _edit(project, NUMBERS, "  script: draw_numbers.py", "  script: draw_numbers.py\n  cluster: docker")
    use_project(project, monkeypatch)
    component = load_workload(project, "defs/numbers")
    assert component.get_profile(project).name == "docker"
    monkeypatch.setenv("HPC_FORCE_CLUSTER", "local")
    assert component.get_profile(project).name == "local"
    assert component.get_profile(project, "leonardo").name == "leonardo"  # `hpc render --cluster leonardo`
    metadata = materialize_ok(project, ["raw/numbers"], monkeypatch)["raw/numbers"]
    assert (metadata["cluster"], metadata["slurm_state"]) == ("local", "n/a: local run, no Slurm job"), metadata


def test_graph_mistakes_name_the_defs_yaml_lines_dagster_loaded(project):
    # Through a real load: the code references dagster attaches lead back to each defs.yaml.
    import shutil

    from components.core.errors import ConfigError
    from components.core.graph_check import check_graph

    lines = _edit(project, "defs/summary/defs.yaml", "deps: [raw/numbers]", "deps: [raw/numbrs]")
    shutil.copytree(project / "defs" / "numbers", project / "defs" / "numbers_copy")
    _edit(project, "defs/numbers_copy/defs.yaml", "  script: draw_numbers.py", "  name: copy\n  script: draw_numbers.py")
    with pytest.raises(ConfigError) as caught:
        check_graph(_build(project))
    text = str(caught.value)
    dep_line = _line(lines, "deps: [raw/numbrs]")
    assert f"defs/summary/defs.yaml:{dep_line} [attributes.assets[0].deps[0]]: stats/summary depends on raw/numbrs" in text
    assert "did you mean raw/numbers?" in text
    assert re.search(r"defs/numbers/defs.yaml:\d+ \[attributes.assets\[0\].key\]: asset key raw/numbers is declared here "
                     r"and again in \S*defs/numbers_copy/defs.yaml:\d+", text), text


REGIONS = "defs/regions/defs.yaml"


@pytest.mark.parametrize(
    ("old", "new", "needle", "message"),
    [
        ("    static: [north, south, east, west]", '    daily: {start: "2026-13-01"}', "daily:", "partitions.daily.start '2026-13-01' is not a daily time"),
        ("    static: [north, south, east, west]", "    static: [north]\n    dynamic: samples", "partitions:", "partitions declares static and dynamic at once"),
        ("    static: [north, south, east, west]", "    static: [north, north]", "static:", "partition key 'north' is listed twice"),
        ("    max_concurrent: 2", "    max_concurrent: 0", "max_concurrent:", "submission.max_concurrent is 0"),
    ],
)
def test_bad_partitions_are_reported_with_file_and_line(project, old, new, needle, message):
    _assert_reported_at(project, REGIONS, old, new, needle, message, with_fix=True)


def test_partitioned_asset_gets_partitions_and_a_single_run_backfill(project):
    import dagster as dg

    defs = _build(project)
    assets_def = defs.resolve_assets_def(dg.AssetKey(["raw", "region_counts"]))
    assert assets_def.partitions_def.get_partition_keys() == ["north", "south", "east", "west"]
    assert assets_def.backfill_policy == dg.BackfillPolicy.single_run()


def test_a_partitioned_asset_never_joins_the_runs_allocation(project):
    import dagster as dg

    _edit(project, REGIONS, "    max_concurrent: 2", "    max_concurrent: 2\n    allocation: run\n  cluster: docker")
    defs = _build(project)
    op = defs.resolve_assets_def(dg.AssetKey(["raw", "region_counts"])).op
    assert op.tags.get("hpc/cluster") == "docker"
    assert "hpc/allocation" not in op.tags and "hpc/needs" not in op.tags, op.tags


def test_a_partitioned_asset_run_without_a_partition_says_how_to_pick_one(project, monkeypatch):
    from tests.conftest import materialize_failing

    text = materialize_failing(project, ["raw/region_counts"], monkeypatch)
    assert "raw/region_counts is partitioned and this run names no partition: nothing was run" in text, text
    assert "--partition <key>" in text and "Traceback" not in text
