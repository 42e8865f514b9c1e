"""hpc_runtime.documents without Ray: listing, cost estimates and cost-weighted batches."""

from __future__ import annotations

import sys

import pytest

from bench.corpus import write_document
from components.core.documents import options_digest
from components.runtime.documents import MissingPackages, estimate_cost, list_documents, plan_batches, require_packages
from components.runtime.increment import FeatureDataError


def test_a_large_document_goes_alone_and_first():
    costs = [1] * 20 + [40]
    batches = plan_batches(costs, workers=2, batch_size=8)
    assert batches[0] == [20]
    assert sorted(i for b in batches for i in b) == list(range(21))  # every document exactly once
    assert all(len(b) <= 8 for b in batches)


def test_batches_balance_cost_not_count():
    costs = [10, 10, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]
    batches = plan_batches(costs, workers=2, batch_size=8)
    loads = [sum(costs[i] for i in b) for b in batches]
    # Target cost 30 // 8 = 3: the two large documents alone, the small ones grouped up to it.
    assert loads[:2] == [10, 10] and max(loads[2:]) <= 3
    assert plan_batches([], workers=2, batch_size=8) == []


def test_pdf_cost_counts_pages(tmp_path):
    pdf = write_document(tmp_path / "a.pdf", "pdf", seed=1, size=4)  # one page per section: 5 pages
    assert estimate_cost(str(pdf), "pdf", pdf.stat().st_size) == 5
    html = write_document(tmp_path / "a.html", "html", seed=1)
    assert estimate_cost(str(html), "html", 150_000) == 10


def test_listing_ids_formats_and_signatures(tmp_path):
    write_document(tmp_path / "sub" / "a.md", "md", seed=1)
    write_document(tmp_path / "b.html", "html", seed=2)
    (tmp_path / "notes.txt").write_text("not a wanted format")
    (tmp_path / ".hidden.md").write_text("# skipped")
    listing = list_documents({"path": str(tmp_path), "formats": ["md", "html"]})
    assert listing["doc_id"].to_list() == ["b.html", "sub/a.md"]
    assert listing["format"].to_list() == ["html", "md"]
    assert all(s.startswith("sha256:") for s in listing["signature"])
    only_md = list_documents({"path": f"{tmp_path}/**/*.md", "formats": ["md"]})
    assert only_md["doc_id"].to_list() == ["sub/a.md"]


def test_missing_or_empty_input_is_refused(tmp_path):
    with pytest.raises(FeatureDataError, match="does not exist"):
        list_documents({"path": str(tmp_path / "nope"), "formats": ["pdf"]})
    with pytest.raises(FeatureDataError, match="no pdf documents found") as info:
        list_documents({"path": str(tmp_path), "formats": ["pdf"]})
    assert "never orphaned" in info.value.fix


def test_only_output_changing_options_change_the_code_version():
    base = options_digest({"pipeline": "native"})
    assert options_digest(None) == base  # defaults are filled in the same way for YAML and model
    assert options_digest({"pipeline": "native", "page_batch_size": 16, "device": "cuda"}) == base
    assert options_digest({"pipeline": "standard"}) != base
    assert options_digest({"pipeline": "native", "ocr": True}) != base


def test_missing_packages_are_named_with_the_fix(monkeypatch):
    # A None entry in sys.modules makes the package unimportable, as in a project without the extra.
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(MissingPackages, match=r"^ray is not installed in this environment .*ray\.workers: 0"):
        require_packages(workers=2)
    require_packages(workers=0)  # in-process conversion needs no Ray
    monkeypatch.setitem(sys.modules, "docling", None)
    with pytest.raises(MissingPackages, match="docling and ray are not installed") as info:
        require_packages(workers=2)
    assert "requirements-docling.txt" in str(info.value) and "ray.workers: 0" not in str(info.value)
