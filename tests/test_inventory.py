"""Finding and loading the project's workload components for the hpc CLI: every failure names its folder."""

from __future__ import annotations

import pytest

from components.core.errors import ConfigError
from components.inventory import load_workload, workload_components
from tests.test_cli import _edit, in_project  # noqa: F401 - the fixture: a copy of the project as cwd


def test_a_folder_without_a_component_is_named_with_the_closest(in_project):
    (in_project / "defs" / "empty").mkdir()
    with pytest.raises(ConfigError, match="defs/empty has no defs.yaml") as info:
        load_workload(in_project, "defs/empty")
    assert "defs/numbers" in info.value.fix
    with pytest.raises(ConfigError, match="not a folder under defs/") as info:
        load_workload(in_project, "defs/numbrs")
    assert info.value.fix.startswith("did you mean defs/numbers?")


def test_every_component_load_failure_is_its_own_cause(in_project, monkeypatch):
    monkeypatch.delenv("HPC_PROBE_THREADS", raising=False)
    _edit(in_project / "defs" / "numbers" / "defs.yaml", 'OMP_NUM_THREADS: "1"', "OMP_NUM_THREADS: \"{{ env('HPC_PROBE_THREADS') }}\"")
    with pytest.raises(ConfigError) as info:
        workload_components(in_project)  # what hpc doctor's job environment check loads
    assert info.value.location.file == in_project / "defs" / "numbers" / "defs.yaml"
    assert "HPC_PROBE_THREADS is not set" in info.value.problem and info.value.location.line
