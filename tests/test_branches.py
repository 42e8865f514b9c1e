"""Branches end to end on the documents example: real Docling, a real Delta store on disk, `dg launch`
(the default multiprocess executor, the project's instance) and the `hpc branch` commands as users run them.

The shipped branch `page-breaks` (branches.yaml) turns docling.page_breaks on for the two PDFs.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from tests.conftest import VENV_BIN, edit, materialize, materialized, run_dg, step_failures

KEYS = ["documents/source", "documents/markdown"]
SUBSET = ["report-4.pdf", "report-6.pdf"]
OTHERS = ["report-1.html", "report-2.md", "report-3.docx", "report-5.html"]


def _markdown(project: Path) -> Path:
    return project / ".hpc" / "data" / "docling" / "documents" / "markdown"


def _main_rows(project: Path) -> pl.DataFrame:
    import deltalake

    table = project / ".hpc" / "data" / "metaxy" / "documents" / "markdown.delta"
    rows = pl.from_arrow(deltalake.DeltaTable(str(table)).to_pyarrow_table())
    return rows.sort("metaxy_updated_at").unique("doc_id", keep="last").sort("doc_id")


def _launch(project: Path, branch: str | None = None) -> dict[str, dict]:
    launched = run_dg(project, "launch", "--assets", " or ".join(f'key:"{k}"' for k in KEYS), timeout=600,
                      env={"HPC_BRANCH": branch or ""})
    assert launched.returncode == 0, (launched.stdout + launched.stderr)[-4000:]
    out = {}
    with dg.DagsterInstance.from_config(str(project / ".dagster")) as instance:
        for key in KEYS:
            event = instance.get_latest_materialization_event(dg.AssetKey.from_user_string(key))
            out[key] = {name: value.value for name, value in event.asset_materialization.metadata.items()}
            out[key]["_tags"] = dict(event.asset_materialization.tags or {})
            out[key]["_run_tags"] = dict(instance.get_run_by_id(event.run_id).tags)
    return out


def _hpc(project: Path, *args: str) -> subprocess.CompletedProcess:
    """`.venv/bin/hpc ...` in the project, as a user types it."""
    return subprocess.run([str(VENV_BIN / "hpc"), *args], cwd=project, capture_output=True, text=True, timeout=300)


def _hpc_here(project: Path, monkeypatch, capsys, *args: str) -> subprocess.CompletedProcess:
    """The same command through the CLI's main in this process (no interpreter start-up)."""
    from components import cli
    from tests.conftest import use_project

    use_project(project, monkeypatch)
    code = cli.main(list(args))
    out = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out.out, out.err)


def test_a_branch_converts_its_subset_beside_main_then_merges_and_main_converts_only_the_rest(project, monkeypatch, capsys):
    main = _launch(project)
    assert main["documents/markdown"]["processed"] == 6
    before = _main_rows(project)
    files_before = {p.name: p.read_text() for p in _markdown(project).iterdir()}

    # The branch: the subset only, under its own definitions, written beside main.
    branch = _launch(project, "page-breaks")
    source, markdown = branch["documents/source"], branch["documents/markdown"]
    assert (source["branch"], source["samples"], source["subset"], source["new"]) == ("page-breaks", 6, 2, 2)
    assert (markdown["branch"], markdown["new"], markdown["processed"], markdown["converted"]) == ("page-breaks", 2, 2, 2)
    # The UI can tell and filter them: the materializations and the run carry the tag hpc/branch.
    assert markdown["_tags"]["hpc/branch"] == source["_tags"]["hpc/branch"] == "page-breaks"
    assert markdown["_run_tags"]["hpc/branch"] == "page-breaks" and "hpc/branch" not in main["documents/markdown"]["_run_tags"]
    assert markdown["store"].startswith("branch page-breaks: delta:") and ".branches/page-breaks" in markdown["store"]
    assert _main_rows(project).equals(before)  # main untouched: its rows and its files
    assert {p.name: p.read_text() for p in _markdown(project).iterdir()} == files_before
    beside = project / ".hpc" / "data" / "docling" / "documents" / "markdown.branches" / "page-breaks"
    assert sorted(p.name for p in beside.iterdir()) == [f"{d}.md" for d in SUBSET]
    assert "<!-- page break -->" in (beside / "report-4.pdf.md").read_text()

    listed = _hpc_here(project, monkeypatch, capsys, "branch", "list")
    assert listed.returncode == 0 and "page-breaks  open" in listed.stdout
    assert "documents/source 2, documents/markdown 2" in listed.stdout
    diff = _hpc_here(project, monkeypatch, capsys, "branch", "diff", "page-breaks", "--json")
    assert diff.returncode == 0, diff.stderr
    features = {f["feature"]: f for f in json.loads(diff.stdout)[0]["features"]}
    assert (features["documents/source"]["added"], features["documents/source"]["changed"],
            features["documents/source"]["same"]) == (0, 0, 2)
    text = features["documents/markdown"]
    assert (text["added"], text["changed"], text["same"], text["changed_examples"], text["fields"]) == (
        0, 2, 0, SUBSET, {"markdown": 2})
    assert set(text["field_versions"]) == {"markdown"}  # main's field version and the branch's differ
    shown = _hpc(project, "branch", "diff", "page-breaks", "--files")
    assert "+<!-- page break -->" in shown.stdout and "report-6.pdf (markdown_path)" in shown.stdout
    assert "field markdown version: main " in shown.stdout

    # Main lacks the branch's definitions: merging now would only make main convert them again.
    refused = _hpc_here(project, monkeypatch, capsys, "branch", "merge", "page-breaks")
    assert refused.returncode == 2 and "definitions main does not have" in refused.stderr
    assert "Nothing was merged" in refused.stderr and _main_rows(project).equals(before)

    edit(project, "defs/documents/defs.yaml", "    pipeline: native", "    pipeline: native\n    page_breaks: true")
    merged = _hpc(project, "branch", "merge", "page-breaks")
    assert merged.returncode == 0, merged.stderr
    assert "documents/markdown 2 sample(s); 2 file(s) moved" in merged.stdout
    rows = _main_rows(project)
    assert rows.filter(pl.col("doc_id").is_in(SUBSET))["metaxy_materialization_id"].to_list() == ["merge:page-breaks"] * 2
    assert "<!-- page break -->" in (_markdown(project) / "report-4.pdf.md").read_text()

    # Main, now with page breaks, converts the four others and none of the merged two.
    after = _launch(project)
    assert (after["documents/markdown"]["new"], after["documents/markdown"]["processed"]) == (4, 4)
    rows = _main_rows(project)
    assert rows.filter(pl.col("doc_id").is_in(SUBSET))["metaxy_materialization_id"].to_list() == ["merge:page-breaks"] * 2
    assert set(rows.filter(pl.col("metaxy_materialization_id") != "merge:page-breaks")["doc_id"]) == set(OTHERS)

    dropped = _hpc_here(project, monkeypatch, capsys, "branch", "drop", "page-breaks")
    assert dropped.returncode == 0, dropped.stderr
    assert not beside.exists() and not (project / ".hpc" / "data" / "metaxy.branches").exists()
    assert "page-breaks  not run yet" in _hpc_here(project, monkeypatch, capsys, "branch", "list").stdout


def test_the_run_tag_chooses_the_branch_and_an_undeclared_one_is_refused(project, monkeypatch):
    monkeypatch.delenv("HPC_BRANCH", raising=False)
    result, _ = materialize(project, ["documents/source"], monkeypatch, tags={"hpc/branch": "page-breaks"})
    assert result.success, step_failures(result)
    assert materialized(result, "documents/source")["subset"] == 2
    assert not (project / ".hpc" / "data" / "metaxy" / "documents").exists()  # main's store: nothing

    result, _ = materialize(project, ["documents/source"], monkeypatch, tags={"hpc/branch": "ocr-tset"})
    text = step_failures(result)
    assert not result.success and "branch 'ocr-tset' (run tag hpc/branch) is not declared in branches.yaml" in text
    assert "page-breaks" in text  # the declared ones are named

    monkeypatch.setenv("HPC_BRANCH", "other")
    result, _ = materialize(project, ["documents/source"], monkeypatch, tags={"hpc/branch": "page-breaks"})
    assert not result.success and "name different branches" in step_failures(result)


# The other mistakes of branches.yaml are in tests/core/test_branches.py; these go through `dg check defs`.
@pytest.mark.parametrize("text, key, message", [
    ("page-breaks:\n  subset: {where: \"format = \"}\n", "page-breaks.subset.where", "is not a filter Metaxy can read"),
    ("page-breaks:\n  set: {documents/markdwn: {docling: {page_breaks: true}}}\n", "page-breaks.set.documents/markdwn",
     "which no defs.yaml declares"),
    ("page-breaks:\n  set: {documents/markdown: {docling: {page_brakes: true}}}\n", "page-breaks.set.documents/markdown",
     "page_brakes"),
])
def test_a_bad_branches_yaml_is_named_at_its_line(project, text, key, message):
    (project / "branches.yaml").write_text("# experiments\n" + text)
    result = run_dg(project, "check", "defs")
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert f"branches.yaml:3 [{key}]" in output and message in output, output[-3000:]
