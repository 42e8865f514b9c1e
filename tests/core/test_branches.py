"""branches.yaml as core.branches reads it, and which branch a run is on."""

from __future__ import annotations

import pytest

from components.core.branches import Branch, deep_merge, load_branches, run_branch
from components.core.errors import ConfigError

SHIPPED = """\
page-breaks:
  description: two PDFs
  subset:
    ids: [report-4.pdf, report-6.pdf]
  set:
    documents/markdown:
      docling: {page_breaks: true}
sample:
  subset: {fraction: 0.1, seed: 7, where: "format = 'pdf'"}
"""


def test_declared_branches_are_read_with_their_subset_and_set(tmp_path):
    (tmp_path / "branches.yaml").write_text(SHIPPED)
    branches = load_branches(tmp_path)
    assert sorted(branches) == ["page-breaks", "sample"]
    assert branches["page-breaks"].subset == {"ids": ["report-4.pdf", "report-6.pdf"]}
    assert branches["page-breaks"].set == {"documents/markdown": {"docling": {"page_breaks": True}}}
    assert branches["sample"].set == {} and branches["sample"].subset["seed"] == 7
    assert str(branches["page-breaks"].where("set", "documents/markdown")).endswith("branches.yaml:6 [page-breaks.set.documents/markdown]")
    assert load_branches(tmp_path / "nowhere") == {}


def test_set_merges_into_the_attributes_without_touching_the_rest():
    attributes = {"docling": {"pipeline": "native", "document_timeout_s": 300}, "ray": {"workers": "auto"}}
    branch = Branch(name="b", set={"documents/markdown": {"docling": {"page_breaks": True}}})
    merged = branch.attributes(attributes, ["documents/source", "documents/markdown"])
    assert merged == {"docling": {"pipeline": "native", "document_timeout_s": 300, "page_breaks": True}, "ray": {"workers": "auto"}}
    assert attributes["docling"] == {"pipeline": "native", "document_timeout_s": 300}  # a copy
    assert branch.attributes(attributes, ["media/crop"]) == attributes
    assert deep_merge({"fields": [{"key": "a"}]}, {"fields": [{"key": "b"}]}) == {"fields": [{"key": "b"}]}  # lists replace


def test_the_run_tag_wins_over_nothing_and_must_agree_with_the_variable(tmp_path, monkeypatch):
    (tmp_path / "branches.yaml").write_text(SHIPPED)
    monkeypatch.delenv("HPC_BRANCH", raising=False)
    assert run_branch({}, tmp_path) is None
    assert run_branch({"hpc/branch": "sample"}, tmp_path).name == "sample"
    monkeypatch.setenv("HPC_BRANCH", "page-breaks")
    assert run_branch({}, tmp_path).name == "page-breaks"
    assert run_branch({"hpc/branch": "page-breaks"}, tmp_path).name == "page-breaks"
    with pytest.raises(ConfigError, match="name different branches"):
        run_branch({"hpc/branch": "sample"}, tmp_path)
    monkeypatch.setenv("HPC_BRANCH", "Bad Name")
    with pytest.raises(ConfigError, match=r"'Bad Name' \(\$HPC_BRANCH\) is not declared in branches.yaml"):
        run_branch({}, tmp_path)


@pytest.mark.parametrize("text, message", [
    ("Bad_Name: {}\n", "branch name 'Bad_Name' is not valid"),
    ("b: {subsett: {}}\n", "unknown key 'subsett' in branch b"),
    ("b: {subset: {ids: []}}\n", "subset.ids must be a non-empty list"),
    ("b: {subset: {seed: 3}}\n", "subset.seed without subset.fraction"),
    ("b: {subset: {fraction: 0}}\n", "must be a number in (0, 1]"),
    ("b: {set: {documents/markdown: {features: {source: x}}}}\n", "a branch cannot change features"),
    ("- b\n", "must map branch names"),
])
def test_mistakes_are_refused_with_the_fix(tmp_path, text, message):
    (tmp_path / "branches.yaml").write_text(text)
    with pytest.raises(ConfigError) as refused:
        load_branches(tmp_path)
    assert message in str(refused.value) and "fix:" in str(refused.value)
