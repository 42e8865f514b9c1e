"""RayDoclingComponent `retry`: failed (or partial) documents converted again without a file change.

Real Docling and a real Delta store in a throw-away copy of the project, as in tests/test_ray_docling.py:
from defs.yaml (`retry: [failed]`), and for one run from a launch's run config (`dg launch --config-json`).
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from tests.conftest import edit, line_of, materialize_ok, pick, run_dg

KEYS = ["documents/source", "documents/markdown"]
EXAMPLE = 6  # documents committed in workloads/example_documents
DEFS = "defs/documents/defs.yaml"
OP = "documents__markdown"  # the conversion's op, named after its asset key


def _stored(project: Path) -> pl.DataFrame:
    import deltalake

    table = project / ".hpc" / "data" / "metaxy" / "documents" / "markdown.delta"
    return pl.from_arrow(deltalake.DeltaTable(str(table)).to_pyarrow_table())


def _written_by(project: Path, doc_id: str) -> str:
    """The run that last wrote a document's row (Metaxy keeps every write; the newest counts)."""
    rows = _stored(project).filter(pl.col("doc_id") == doc_id).sort("metaxy_created_at")
    return rows["metaxy_materialization_id"][-1]


def _corrupt_and_damaged(project: Path) -> None:
    """broken.pdf fails (not a PDF); damaged.pdf is a partial success (page 2 unreadable)."""
    from bench.corpus import write_pdf_with_unreadable_page

    docs = project / "workloads" / "example_documents"
    (docs / "broken.pdf").write_bytes(b"%PDF-1.4\nthis is not a pdf at all\n")
    write_pdf_with_unreadable_page(docs / "damaged.pdf")


def test_retry_from_defs_yaml_converts_only_the_listed_statuses_again(project, monkeypatch):
    _corrupt_and_damaged(project)
    r1 = materialize_ok(project, KEYS, monkeypatch)["documents/markdown"]
    assert pick(r1, "new", "converted", "partial", "failed") == (EXAMPLE + 2, EXAMPLE, 1, 1)
    assert "retried" not in r1

    # Nothing changed and no retry: nothing converted, the failure stays as it is.
    r2 = materialize_ok(project, KEYS, monkeypatch)["documents/markdown"]
    assert pick(r2, "stale", "converted", "failed", "skipped") == (0, 0, 0, EXAMPLE + 2)
    assert r2["job"] == "none: nothing to do"
    first = _written_by(project, "broken.pdf")

    # retry: [failed]: exactly the failed document again, though no file changed; the partial one is left.
    edit(project, DEFS, "  orphans: delete", "  retry: [failed]\n  orphans: delete")
    r3 = materialize_ok(project, KEYS, monkeypatch)
    assert pick(r3["documents/source"], "new", "stale") == (0, 0)
    meta = r3["documents/markdown"]
    assert pick(meta, "new", "stale", "retried", "converted", "partial", "failed", "processed", "skipped") == (
        0, 1, 1, 0, 0, 1, 1, EXAMPLE + 1)
    assert meta["stale_fields"] == {}  # no input changed: it is there because of retry alone
    assert [f for f in meta["failures"] if f.startswith("broken.pdf: ")], meta["failures"]
    assert _written_by(project, "broken.pdf") != first  # really converted (and recorded) again
    stored = _stored(project).sort("metaxy_created_at").unique("doc_id", keep="last")
    assert dict(stored.group_by("status").len().iter_rows()) == {"converted": EXAMPLE, "partial": 1, "failed": 1}

    # Listing partial too brings the partial document back as well.
    edit(project, DEFS, "retry: [failed]", "retry: [failed, partial]")
    meta = materialize_ok(project, KEYS, monkeypatch)["documents/markdown"]
    assert pick(meta, "stale", "retried", "converted", "partial", "failed", "skipped") == (2, 2, 0, 1, 1, EXAMPLE)


def test_retry_value_in_defs_yaml_is_refused_at_its_line(project):
    lines = edit(project, DEFS, "  orphans: delete", "  retry: [failed, converted]\n  orphans: delete")
    result = run_dg(project, "check", "defs")
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert f"defs/documents/defs.yaml:{line_of(lines, 'retry:')}" in output, output[-3000:]
    assert "'converted' is not one of ['failed', 'partial']" in output, output[-3000:]


def _launch(project: Path, selection: str, config: dict | None = None):
    args = ["launch", "--assets", selection]
    if config is not None:
        args += ["--config-json", json.dumps(config)]
    return run_dg(project, *args, timeout=600)


def test_a_launch_retries_failed_documents_for_one_run(project):
    # The user's way: `dg launch` in a subprocess, default multiprocess executor, the project's instance.
    (project / "workloads" / "example_documents" / "broken.pdf").write_bytes(b"%PDF-1.4\nnot a pdf\n")
    first = _launch(project, 'key:"documents/source" or key:"documents/markdown"')
    assert first.returncode == 0, first.stderr[-4000:]
    written = _written_by(project, "broken.pdf")

    # A value that cannot be retried is refused before anything runs, naming the allowed ones.
    bad = _launch(project, "documents/markdown", {"ops": {OP: {"config": {"retry": ["converted", "broken"]}}}})
    output = bad.stdout + bad.stderr
    assert bad.returncode != 0
    assert f"ops.{OP}.config.retry: 'converted', 'broken' cannot be retried; allowed: failed, partial" in output, output[-4000:]
    assert _written_by(project, "broken.pdf") == written

    # retry: [failed] for this run only: the failed document is converted again (and fails again).
    again = _launch(project, "documents/markdown", {"ops": {OP: {"config": {"retry": ["failed"]}}}})
    output = again.stdout + again.stderr
    assert again.returncode == 0, output[-4000:]
    assert "0 new, 1 stale, 0 orphaned, 1 retried (status failed)" in output and "retried: broken.pdf" in output, output[-4000:]
    assert "documents/markdown: processed 1 sample(s)" in output, output[-4000:]
    assert _written_by(project, "broken.pdf") != written

    # The launch did not change defs.yaml's (empty) retry: the next plain launch converts nothing.
    plain = _launch(project, "documents/markdown")
    assert plain.returncode == 0 and "nothing to compute" in plain.stdout + plain.stderr, (plain.stdout + plain.stderr)[-4000:]
