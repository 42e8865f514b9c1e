"""Reading what a workload imports from its source."""

from components.core.imports import workload_imports


def test_workload_imports_follow_the_runtime_and_skip_optional_and_stdlib(tmp_path):
    (tmp_path / "helper.py").write_text("")
    (tmp_path / "w.py").write_text(
        "import os, json\nimport numpy as np\nfrom dagster_pipes import open_dagster_pipes\nimport helper\n"
        "from hpc_runtime.increment import resolve\ntry:\n    import rich\nexcept ImportError:\n    rich = None\n"
        "def f():\n    import scipy.stats\n")
    found = workload_imports(tmp_path / "w.py")
    assert found[:2] == ("numpy", "dagster_pipes") and "scipy" in found
    assert {"metaxy", "narwhals", "polars"} <= set(found)  # through hpc_runtime.increment
    assert not {"os", "json", "helper", "rich", "hpc_runtime"} & set(found)
    (tmp_path / "broken.py").write_text("def (:\n")
    assert workload_imports(tmp_path / "broken.py") == ()
