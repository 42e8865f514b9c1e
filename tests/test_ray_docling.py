"""RayDoclingComponent end to end: real Docling, real Ray (two actors), a real Delta store on disk.

The example in defs/documents runs in a throw-away copy of the project; documents are added,
corrupted and edited between rounds, and the counts come from the materializations Dagster recorded.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from tests.conftest import edit, line_of, materialize_failing, materialize_ok, pick

KEYS = ["documents/source", "documents/markdown"]
EXAMPLE = 6  # documents committed in workloads/example_documents


def _markdown_dir(project: Path) -> Path:
    return project / ".hpc" / "data" / "docling" / "documents" / "markdown"


def _stored(project: Path) -> pl.DataFrame:
    import deltalake

    table = project / ".hpc" / "data" / "metaxy" / "documents" / "markdown.delta"
    return pl.from_arrow(deltalake.DeltaTable(str(table)).to_pyarrow_table())


def test_converts_once_then_only_what_changed_and_reports_a_corrupt_file(project, monkeypatch):
    docs = project / "workloads" / "example_documents"
    (docs / "broken.pdf").write_bytes(b"%PDF-1.4\nthis is not a pdf at all\n")

    # Round 1: everything is new; the corrupt PDF fails alone.
    r1 = materialize_ok(project, KEYS, monkeypatch)
    assert pick(r1["documents/source"], "new", "documents") == (EXAMPLE + 1, EXAMPLE + 1)
    assert r1["documents/source"]["formats"] == {"docx": 1, "html": 2, "md": 1, "pdf": 3}
    assert pick(r1["documents/markdown"], "new", "converted", "failed", "skipped", "processed") == (EXAMPLE + 1, EXAMPLE, 1, 0, EXAMPLE + 1)
    assert any(f.startswith("broken.pdf: ") for f in r1["documents/markdown"]["failures"])
    outputs = _markdown_dir(project)
    assert sorted(p.name for p in outputs.iterdir()) == sorted(f"{p.name}.md" for p in docs.iterdir() if p.name != "broken.pdf")
    assert "Report 1003" in (outputs / "report-4.pdf.md").read_text()  # the PDF's text layer, page 1
    stored = _stored(project)
    assert dict(stored.group_by("status").len().iter_rows()) == {"converted": EXAMPLE, "failed": 1}
    assert stored.filter(pl.col("doc_id") == "broken.pdf")["error"][0]

    # Round 2: nothing changed: no document is converted and no workload starts.
    r2 = materialize_ok(project, KEYS, monkeypatch)
    assert pick(r2["documents/source"], "new", "stale", "orphaned") == (0, 0, 0)
    assert pick(r2["documents/markdown"], "new", "stale", "converted", "failed", "skipped") == (0, 0, 0, 0, EXAMPLE + 1)
    assert r2["documents/markdown"]["job"] == "none: nothing to do"

    # Round 3: one document edited: exactly that one is converted again.
    before = (outputs / "report-2.md.md").read_text()
    (docs / "report-2.md").write_text("# Edited report\n\nOnly this document changed.\n")
    r3 = materialize_ok(project, KEYS, monkeypatch)
    assert pick(r3["documents/source"], "new", "stale") == (0, 1)
    assert pick(r3["documents/markdown"], "new", "stale", "converted", "failed", "skipped") == (0, 1, 1, 0, EXAMPLE)
    after = (outputs / "report-2.md.md").read_text()
    assert after != before and "Only this document changed." in after


def test_standard_pipeline_without_weights_says_how_to_get_them(project, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    edit(project, "defs/documents/defs.yaml", "pipeline: native", "pipeline: standard")
    edit(project, "defs/documents/defs.yaml", "workers: auto", "workers: 0")
    message = materialize_failing(project, KEYS, monkeypatch)
    assert "could not load its models" in message
    assert "docling-tools models download" in message and "artifacts_path" in message
    # Nothing half-written: the failed step recorded no conversion.
    assert not (project / ".hpc" / "data" / "metaxy" / "documents" / "markdown.delta").exists()


def test_missing_input_directory_is_named(project, monkeypatch):
    edit(project, "defs/documents/defs.yaml", "path: workloads/example_documents", "path: workloads/no_such_dir")
    message = materialize_failing(project, ["documents/source"], monkeypatch)
    assert "no_such_dir does not exist" in message and "input.path" in message


def test_unknown_format_points_at_the_line(project):
    from tests.conftest import run_dg

    lines = edit(project, "defs/documents/defs.yaml", "formats: [pdf, docx, html, md]", "formats: [pdf, odt]")
    result = run_dg(project, "check", "defs")
    assert result.returncode != 0
    output = result.stdout + result.stderr
    # dg's schema check names the enclosing key's line and shows the offending one.
    assert "defs/documents/defs.yaml:" in output and f"{line_of(lines, 'formats:')} |     formats: [pdf, odt]" in output
    assert "'pdf', 'docx', 'pptx'" in output or "pdf" in output.split("formats: [pdf, odt]")[0]


@pytest.mark.parametrize("key", ["media/sample", "documents/source"])
def test_feature_key_clash_with_another_definition_is_refused(project, key):
    from tests.conftest import run_dg

    edit(project, "defs/documents/defs.yaml", "converted: documents/markdown", f"converted: {key}")
    result = run_dg(project, "check", "defs")
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "declared" in output or "depends on itself" in output, output[-2000:]
    assert "defs/documents/defs.yaml" in output


def _launched(project: Path, key: str) -> dict:
    """Materialize both assets the user's way (`dg launch`, the default multiprocess executor, the
    project's instance) and return the metadata of `key`'s latest materialization."""
    import dagster as dg

    from tests.conftest import run_dg

    launched = run_dg(project, "launch", "--assets", " or ".join(f'key:"{k}"' for k in KEYS), timeout=600)
    assert launched.returncode == 0, (launched.stdout + launched.stderr)[-4000:]
    with dg.DagsterInstance.from_config(str(project / ".dagster")) as instance:
        event = instance.get_latest_materialization_event(dg.AssetKey.from_user_string(key))
    return {name: value.value for name, value in event.asset_materialization.metadata.items()}


def test_a_document_past_its_time_limit_is_counted_failed_within_twice_the_limit(project):
    # The case: a 400-page PDF with document_timeout_s: 1 used to run ~10 s and be stored as
    # `partial` with truncated markdown while the asset said "converted: 2, failed: 0".
    # Beside it, a PDF with one unreadable page: a partial result, counted and listed apart.
    from bench.corpus import write_document, write_pdf_with_unreadable_page

    docs = project / "workloads" / "example_documents"
    write_document(docs / "long.pdf", "pdf", 1, 399)
    write_pdf_with_unreadable_page(docs / "damaged.pdf")
    edit(project, "defs/documents/defs.yaml", "document_timeout_s: 300", "document_timeout_s: 1")
    meta = _launched(project, "documents/markdown")
    assert pick(meta, "converted", "partial", "failed", "processed") == (EXAMPLE, 1, 1, EXAMPLE + 2)
    assert [f for f in meta["failures"] if f.startswith("long.pdf: timed out: stopped after")], meta["failures"]
    assert [p for p in meta["partials"] if p.startswith("damaged.pdf: pages 2 failed: ")], meta["partials"]
    assert (_markdown_dir(project) / "damaged.pdf.md").exists()
    assert "1 stopped at the time limit" in meta["conversion"] and meta["device"] == "cpu"
    row = _stored(project).filter(pl.col("doc_id") == "long.pdf").row(0, named=True)
    assert row["status"] == "failed" and row["elapsed_s"] <= 2.0 and row["chars"] == 0
    assert not (_markdown_dir(project) / "long.pdf.md").exists()  # no truncated result anywhere
