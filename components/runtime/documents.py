"""Documents for RayDoclingComponent: the listing with cost estimates, and the workload's body.

    from hpc_runtime.documents import convert_increment

    convert_increment(FeatureJob.from_env(), log=print)

Docling and Ray are imported only where they are used (docling_convert, docling_pool), so listing
documents (a step that runs where the store is) needs neither. A document that fails is recorded
with its error and never fails the others.
"""

from __future__ import annotations

import glob
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import polars as pl

from .docling_convert import SOURCE_ID, STATUSES, Converter, MissingPackages, MissingWeights
from .docling_convert import expand as _expand
from .docling_pool import convert_documents
from .increment import Feature, FeatureDataError, ingest
from .job import FeatureJob, file_signature
from .names import FORMATS

# Bytes of non-PDF input that cost about as much as one PDF page; a rough, documented estimate.
BYTES_PER_PAGE = {"docx": 20_000, "pptx": 60_000, "xlsx": 30_000, "html": 15_000, "md": 6_000, "asciidoc": 6_000, "csv": 30_000}
_PDF_PAGE = re.compile(rb"/Type\s*/Page(?![a-zA-Z])")
Log = Callable[[str], None]


def estimate_cost(path: str, fmt: str, size: int) -> int:
    """Estimated pages: counted page objects for a PDF, bytes scaled per format otherwise."""
    if fmt == "pdf":
        try:
            with open(path, "rb") as handle:
                pages = len(_PDF_PAGE.findall(handle.read(64 << 20)))
        except OSError:
            pages = 0
        # Compressed object streams hide page objects: fall back to ~50 KB per page.
        return max(1, pages or size // 50_000)
    return max(1, size // BYTES_PER_PAGE.get(fmt, 20_000))


def _matches(input_path: str, suffixes: dict[str, str]) -> Iterator[tuple[Path, Path]]:
    """(file, the root its id is relative to) for every file with one of the wanted suffixes."""
    root = Path(input_path)
    if any(ch in input_path for ch in "*?["):
        base = Path(input_path.split("*")[0].split("?")[0].split("[")[0])
        base = base if base.is_dir() else base.parent
        candidates = (Path(p) for p in glob.glob(input_path, recursive=True))
    elif root.is_dir():
        base = root
        candidates = (p for p in root.rglob("*"))
    else:
        raise FeatureDataError(
            f"document input {input_path} does not exist (or is not a directory)",
            "set input.path to a directory or a glob such as /data/docs/**/*.pdf on the machine that holds the documents",
        )
    for path in sorted(candidates):
        if path.is_file() and path.suffix.lower() in suffixes and not path.name.startswith("."):
            yield path, base


def list_documents(source: dict) -> pl.DataFrame:
    """The current corpus: one row per document with its format, size, cost and signature."""
    formats = list(source["formats"])
    input_path = _expand(source["path"])
    suffixes = {suffix: fmt for fmt in formats for suffix in FORMATS[fmt]}
    rows = []
    for path, base in _matches(input_path, suffixes):
        fmt = suffixes[path.suffix.lower()]
        size = path.stat().st_size
        rows.append({
            SOURCE_ID: path.relative_to(base).as_posix(),
            "path": str(path.resolve()),
            "format": fmt,
            "bytes": size,
            "cost": estimate_cost(str(path), fmt, size),
            "signature": file_signature(str(path), content=source.get("signature", "content") == "content"),
        })
    if not rows:
        raise FeatureDataError(
            f"no {', '.join(formats)} documents found under {input_path}",
            "check input.path and input.formats; an empty listing is refused so stored results are never orphaned by a typo",
        )
    schema = {SOURCE_ID: pl.String, "path": pl.String, "format": pl.String, "bytes": pl.Int64, "cost": pl.Int64, "signature": pl.String}
    return pl.DataFrame(rows, schema=schema)


def list_step(request: dict) -> dict:
    """Runtime step for the source feature: list the corpus where it lives, then ingest the listing."""
    job = FeatureJob(request)
    listing = list_documents(request["documents"]["input"])
    job.emit(listing, provenance={"content": "signature"})
    summary = ingest(request)
    summary["formats"] = {fmt: int(n) for fmt, n in listing.group_by("format").len().sort("format").iter_rows()}
    summary["pages_estimated"] = int(listing["cost"].sum())
    return summary



def convert_increment(job, log: Log = print) -> dict:
    """The workload body: convert the new and stale documents and write the results as they come.

    Returns counts per status (`converted`, `partial`, `failed`; each document in exactly one),
    `pages`, `documents`, `elapsed_s`, `docs_per_s`, `failures` and `partials` ("doc_id: error"
    lines) and `conversion` (how the work was spread: docling_pool's stats).
    """
    settings = job.feature.request["documents"]
    docs = job.samples(shard=False)  # one driver for the whole job: Ray spreads the work, not srun
    totals = {status: 0 for status in STATUSES} | {"pages": 0}
    listed: dict[str, list[str]] = {"failed": [], "partial": []}
    stats: dict = {}
    started = time.perf_counter()
    done = 0
    for frame in convert_documents(docs, settings, log, stats):
        job.write(frame)
        done += frame.height
        counts = dict(frame.group_by("status").len().iter_rows())
        for status in STATUSES:
            totals[status] += int(counts.get(status, 0))
        totals["pages"] += int(frame["pages"].sum())
        for doc_id, status, error in frame.filter(pl.col("status") != "converted").select(SOURCE_ID, "status", "error").iter_rows():
            listed[status].append(f"{doc_id}: {error}")
        log(f"{done}/{docs.height} done after {time.perf_counter() - started:.1f}s: "
            + ", ".join(f"{totals[s]} {s}" for s in STATUSES))
    elapsed = time.perf_counter() - started
    return {**totals, "documents": docs.height, "elapsed_s": round(elapsed, 3),
            "docs_per_s": round(docs.height / elapsed, 3) if elapsed > 0 else None,
            "failures": listed["failed"], "partials": listed["partial"], "conversion": stats}


__all__ = ["FORMATS", "Converter", "MissingPackages", "MissingWeights", "convert_documents", "convert_increment",
           "list_documents", "Feature"]
