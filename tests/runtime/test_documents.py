"""hpc_runtime.documents and docling_pool without Docling: listing, cost estimates, the scheduler's rules."""

from __future__ import annotations

import sys
from collections import deque

import pytest

from bench.corpus import write_document
from components.core.documents import options_digest
from components.runtime.docling_convert import MissingPackages, require_packages
from components.runtime.docling_pool import hard_limit, ray_pays_off, take
from components.runtime.documents import estimate_cost, list_documents
from components.runtime.increment import FeatureDataError


def test_the_hard_limit_leaves_docling_its_own_stop_first():
    assert hard_limit(None) is None and hard_limit(0) is None
    assert hard_limit(1) == 1.5  # the case: failed within 2x the limit
    assert hard_limit(0.2) == 0.7  # at least half a second of grace
    assert hard_limit(300) == 360  # at most a minute


def test_ray_starts_only_when_it_ends_sooner():
    # 2 workers, 11 s to start: a few seconds of work stay here, minutes go to Ray.
    assert not ray_pays_off(5, 11, 2)
    assert not ray_pays_off(20, 11, 2)
    assert ray_pays_off(60, 11, 2)
    assert ray_pays_off(600, 11, 2)
    assert not ray_pays_off(10_000, 11, 1)  # one worker only replaces this process


def test_this_process_takes_the_costliest_alone_and_the_cheapest_beside_ray():
    pending = deque([3, 1, 2, 0])  # costliest first
    assert take(pending, None) == 3
    assert take(pending, object()) == 0
    assert list(pending) == [1, 2]


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
        require_packages(ray=True)
    require_packages(ray=False)  # in-process conversion needs no Ray
    monkeypatch.setitem(sys.modules, "docling", None)
    with pytest.raises(MissingPackages, match="docling and ray are not installed") as info:
        require_packages(ray=True)
    assert "requirements-docling.txt" in str(info.value) and "ray.workers: 0" not in str(info.value)
