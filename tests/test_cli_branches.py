"""`hpc branch`'s printing and its messages for names it cannot act on (no store needed)."""

from __future__ import annotations

from components import cli
from components.cli_branches import _show_files
from tests.conftest import use_project


def test_files_are_shown_as_the_step_compared_them_where_they_are(capsys):
    _show_files([
        {"id": "a.pdf", "column": "markdown_path", "branch": "/b/a.pdf.md", "main": "/m/a.pdf.md",
         "diff": ["--- main/a.pdf", "+++ branch/a.pdf", "+<!-- page break -->"], "diff_lines": 3},
        {"id": "b.pdf", "column": "markdown_path", "branch": "/b/b.pdf.md", "main": "/m/b.pdf.md", "diff": [], "diff_lines": 0},
        {"id": "c.pdf", "column": "markdown_path", "branch": "/b/c.pdf.md", "main": "/m/c.pdf.md",
         "unreadable": "branch file /b/c.pdf.md: Permission denied"},
        {"id": "d.pdf", "column": "markdown_path", "branch": "/b/d.pdf.md", "main": "/m/d.pdf.md"},
    ])
    out = capsys.readouterr().out
    assert "a.pdf (markdown_path): 3 diff lines" in out and "      +<!-- page break -->" in out
    assert "b.pdf (markdown_path): identical" in out
    assert "c.pdf (markdown_path): cannot compare: branch file /b/c.pdf.md: Permission denied" in out
    assert "d.pdf (markdown_path): not compared" in out  # never "identical" for files nobody read


def test_a_branch_that_is_not_declared_or_has_not_run_is_named(project, monkeypatch, capsys):
    use_project(project, monkeypatch)
    assert cli.main(["branch", "diff", "nope"]) == 2
    err = capsys.readouterr().err
    assert "branch 'nope' is not declared in branches.yaml" in err and "declared branches: page-breaks" in err
    assert cli.main(["branch", "merge", "page-breaks"]) == 2
    err = capsys.readouterr().err
    assert "branch page-breaks has not run yet" in err and "HPC_BRANCH=page-breaks" in err
    assert cli.main(["branch", "list"]) == 0
    assert "page-breaks  not run yet (declared in branches.yaml)" in capsys.readouterr().out
