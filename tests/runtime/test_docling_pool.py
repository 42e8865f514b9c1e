"""Docling conversion with real Docling and real Ray: honest states, the hard time limit, who converts.

The slow document is the issue's case: a 400-page PDF (text layer, native pipeline) that Docling
takes seconds over, with `document_timeout_s: 1`.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import deque
from pathlib import Path

import polars as pl
import pytest

from bench.corpus import write_document
from components.runtime.docling_convert import Converter
from components.runtime.docling_pool import DocList, convert_documents, hard_limit
from components.runtime.documents import list_documents

FORMATS = ["pdf", "docx", "html", "md"]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _importable_by_children(monkeypatch):
    # Converter processes and Ray workers import components.runtime from the project.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))


def _corpus(directory: Path, small: int, size: int = 1, big: bool = True) -> pl.DataFrame:
    for i in range(small):
        write_document(directory / f"doc-{i:03d}.{FORMATS[i % 4]}", FORMATS[i % 4], i, size)
    if big:
        write_document(directory / "big.pdf", "pdf", 1, 399)  # 400 pages
    return list_documents({"path": str(directory), "formats": FORMATS, "signature": "stat"})


def _settings(tmp_path: Path, workers, timeout_s=None, batch_size=8) -> dict:
    return {"input": {"formats": FORMATS}, "output": str(tmp_path / "out"),
            "docling": {"pipeline": "native", "document_timeout_s": timeout_s},
            "ray": {"workers": workers, "batch_size": batch_size, "cpus_per_worker": 1}}


def _run(docs: pl.DataFrame, settings: dict, stats: dict | None = None) -> pl.DataFrame:
    frames = list(convert_documents(docs, settings, log=print, stats=stats))
    result = pl.concat(frames)
    assert sorted(result["doc_id"]) == sorted(docs["doc_id"])  # every document exactly once
    assert all(frame.height <= settings["ray"]["batch_size"] for frame in frames)
    return result


def test_docling_stopping_at_its_timeout_is_a_failure_not_a_truncated_result(tmp_path):
    # In-process, Docling's own check between pages fires: it returns a partial success with the
    # pages so far. The old code stored that as `partial` with truncated markdown.
    docs = _corpus(tmp_path / "docs", 0)
    converter = Converter({"pipeline": "native", "document_timeout_s": 1}, ["pdf"], str(tmp_path / "out"))
    row = converter.convert("big.pdf", docs["path"][0])
    assert row["status"] == "failed" and row["error"].startswith("timed out: ") and row["chars"] == 0
    assert not (tmp_path / "out" / "big.pdf.md").exists()


def test_a_document_past_its_limit_is_stopped_within_twice_the_limit_and_the_rest_converts(tmp_path):
    docs = _corpus(tmp_path / "docs", 6)
    stats: dict = {}
    result = _run(docs, _settings(tmp_path, 0, timeout_s=1), stats)
    big = result.filter(pl.col("doc_id") == "big.pdf").row(0, named=True)
    assert big["status"] == "failed" and "timed out: stopped after" in big["error"] and "killed and replaced" in big["error"]
    assert big["elapsed_s"] <= 2.0, big  # the bar: failed within 2x its limit
    assert not (tmp_path / "out" / "big.pdf.md").exists()
    # The replacement converter converted everything else.
    assert result.filter(pl.col("doc_id") != "big.pdf")["status"].to_list() == ["converted"] * 6
    assert stats["stopped"] == 1


def test_a_converter_process_that_dies_fails_only_its_document(tmp_path):
    # The OOM killer's SIGKILL, for real: the document in hand fails, a new converter does the rest.
    docs = _corpus(tmp_path / "docs", 4)
    killed: list[int] = []

    def log(message: str) -> None:
        # The first document a fresh converter gets is the costliest, the 400-page PDF (~10 s of
        # work): kill the first converter a second into it.
        if message.startswith("converter process ") and not killed:
            pid = int(message.split()[2])
            killed.append(pid)
            threading.Timer(1.0, os.kill, (pid, signal.SIGKILL)).start()

    result = pl.concat(list(convert_documents(docs, _settings(tmp_path, 0, timeout_s=120), log=log)))
    assert killed
    rows = {row["doc_id"]: row for row in result.iter_rows(named=True)}
    assert rows["big.pdf"]["status"] == "failed"
    assert "the converter process died while converting it (signal SIGKILL)" in rows["big.pdf"]["error"]
    assert [row["status"] for doc, row in rows.items() if doc != "big.pdf"] == ["converted"] * 4


def test_explicit_ray_workers_take_over_from_the_workloads_converter(tmp_path):
    # One actor: the workload's converter converts while Ray starts (nobody waits for it), then
    # steps aside once the actor is ready, and the actor converts the rest.
    docs = _corpus(tmp_path / "docs", 120, size=20, big=False)
    stats: dict = {}
    result = _run(docs, _settings(tmp_path, 1), stats)
    assert result["status"].to_list() == ["converted"] * docs.height
    assert stats["local_docs"] > 0 and stats["ray_docs"] > 0, stats
    assert stats["decision"] == "ray" and len(stats["actors_ready_s"]) == 1


def test_ray_kills_an_actor_past_the_limit_and_replaces_it(tmp_path):
    from components.runtime.docling_ray import RayPool

    docs = _corpus(tmp_path / "docs", 2)
    plan = DocList(docs, 1.0, hard_limit(1.0))
    pool = RayPool({"pipeline": "native", "document_timeout_s": 1}, FORMATS, str(tmp_path / "out"),
                   {"workers": 1, "cpus_per_worker": 1}, 1, print)
    try:
        pool.up.wait(60)
        original = pool.actors[0]
        pending = deque(sorted(range(docs.height), key=lambda i: -plan.costs[i]))
        rows: dict[str, dict] = {}
        deadline = time.monotonic() + 180
        while len(rows) < docs.height and time.monotonic() < deadline:
            pool.step(plan, pending, plan.limit, lambda index, row, where: rows.__setitem__(row["doc_id"], row))
            pool.wait(0.05)
        assert rows["big.pdf"]["status"] == "failed" and "killed and replaced" in rows["big.pdf"]["error"]
        assert 1.5 <= rows["big.pdf"]["elapsed_s"] <= 2.5
        # The two small documents queued behind it were put back and converted by the new actor.
        assert [rows[d]["status"] for d in rows if d != "big.pdf"] == ["converted", "converted"]
        assert len(pool.actors) == 1 and pool.actors[0] is not original and pool.actors[0].info is not None
    finally:
        pool.shutdown()


def test_auto_keeps_a_small_increment_in_the_workloads_process(tmp_path):
    import ray

    docs = _corpus(tmp_path / "docs", 6, big=False)
    stats: dict = {}
    result = _run(docs, _settings(tmp_path, "auto"), stats)
    assert result["status"].to_list() == ["converted"] * 6
    assert stats["decision"] == "auto: serial" and stats["local_docs"] == 6 and "ray_up_s" not in stats
    assert not ray.is_initialized()


def test_a_page_that_fails_leaves_a_partial_result_naming_the_page(tmp_path):
    from bench.corpus import write_pdf_with_unreadable_page

    path = write_pdf_with_unreadable_page(tmp_path / "damaged.pdf")
    row = Converter({"pipeline": "native"}, ["pdf"], str(tmp_path / "out")).convert("damaged.pdf", str(path))
    assert row["status"] == "partial" and row["pages"] == 2 and row["error"].startswith("pages 2 failed: ")
    assert "Report" in (tmp_path / "out" / "damaged.pdf.md").read_text()  # the readable pages are kept
