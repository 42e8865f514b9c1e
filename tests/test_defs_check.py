"""Every defs.yaml checked before dagster loads it: in-process, and as `dg check defs` prints it."""

from __future__ import annotations

import pytest

from components.core.errors import ConfigError
from components.defs_check import defs_error
from tests.conftest import ROOT, build, edit, line_of, root_cause, run_dg, use_project

NUMBERS = "defs/numbers/defs.yaml"


def _add(project, folder: str, content: str | bytes) -> None:
    path = project / "defs" / folder
    path.mkdir()
    if isinstance(content, bytes):
        (path / "defs.yaml").write_bytes(content)
    else:
        (path / "defs.yaml").write_text(content)


def test_the_shipped_defs_have_no_problems():
    assert defs_error(ROOT) is None


def test_every_broken_file_is_reported_at_once(project):
    _add(project, "latin", "type: components.SlurmAssetComponent\n# caf\xe9\n".encode("latin-1"))
    _add(project, "empty", "# nothing yet\n")
    _add(project, "typo", "type: components.SlurmAsetComponent\nattributes: {}\n")
    _add(project, "twice", "type: components.SlurmAssetComponent\nattributes:\n  script: a.py\n  script: b.py\n")
    _add(project, "docling", "type: components.RayDoclingComponent\nattributes:\n  input: {path: x, formats: [pdf, doc]}\n"
                             "  features: {source: d/source, converted: d/markdown}\n")
    text = str(defs_error(project))
    assert text.startswith("5 problems in the YAML under defs/:")
    assert "defs/latin/defs.yaml:2: the file is not UTF-8 text" in text
    assert "defs/empty/defs.yaml:1: defs.yaml declares no component" in text
    assert "defs/typo/defs.yaml:1 [type]: unknown component type 'components.SlurmAsetComponent'" in text
    assert "fix: did you mean components.SlurmAssetComponent?" in text
    assert "defs/twice/defs.yaml:4 [attributes.script]: key 'script' is given twice, on lines 3 and 4" in text
    assert "defs/docling/defs.yaml:3 [attributes.input.formats[1]]: 'doc' is not an accepted value" in text
    assert "did you mean 'docx'? accepted values: pdf, docx" in text


def test_loading_without_definitions_py_refuses_values_yaml_would_change(project):
    # ComponentTree (tests, the hpc CLI) skips definitions.py: the component's load checks its own file.
    lines = edit(project, NUMBERS, '  args: ["--count", "5000", "--seed", "7"]', "  args: [--count, 5000, --verbose, on]")
    with pytest.raises(Exception) as info:
        build(project)
    error = root_cause(info.value)
    assert isinstance(error, ConfigError), repr(error)
    assert f"defs/numbers/defs.yaml:{line_of(lines, 'args:')} [attributes.args[3]]: YAML reads the unquoted on" in str(error)


def test_dg_check_defs_prints_every_problem_with_its_line(project):
    edit(project, NUMBERS, "    cpus_per_task: 1", "    cpus_per_task: four")
    edit(project, NUMBERS, '    time: "00:05:00"', "    time: 1:30:00")
    lines = edit(project, NUMBERS, '    OMP_NUM_THREADS: "1"', "    OMP_NUM_THREADS: 1\n    MODEL_VERSION: 1.10")
    _add(project, "empty", "")
    result = run_dg(project, "check", "defs")
    out = result.stdout + result.stderr
    assert result.returncode != 0
    at = {needle: f"defs/numbers/defs.yaml:{line_of(lines, needle)}" for needle in ("cpus_per_task", "time:", "MODEL_VERSION")}
    assert f"{at['cpus_per_task']} [attributes.resources.cpus_per_task]: must be a whole number, not 'four'" in out, out
    assert f"{at['time:']} [attributes.resources.time]: YAML reads the unquoted 1:30:00 as the integer 5400" in out
    assert 'quote it: "1:30:00"' in out and 'quote it: "1.10"' in out
    assert f"{at['MODEL_VERSION']} [attributes.env.MODEL_VERSION]: YAML reads the unquoted 1.10 as the number 1.1" in out
    assert "defs/empty/defs.yaml:1: defs.yaml declares no component" in out
    assert "OMP_NUM_THREADS" not in out  # 1 reads back as "1": harmless
    assert "Traceback" not in out and "components/defs_check.py" not in out


def test_bare_numbers_that_read_back_as_written_are_taken_as_written(project, monkeypatch, capsys):
    # mem: 500 is 500 MB and time: 30 is 30 minutes, as in sbatch; only YAML's rewrites are refused.
    from components import cli

    edit(project, NUMBERS, "    mem: 1G", "    mem: 500")
    edit(project, NUMBERS, '    time: "00:05:00"', "    time: 30")
    use_project(project, monkeypatch)
    assert defs_error(project) is None
    assert cli.main(["render", "defs/numbers", "--cluster", "vsc5"]) == 0, capsys.readouterr().err
    script = capsys.readouterr().out
    assert "#SBATCH --mem=500M" in script and "#SBATCH --time=00:30:00" in script
