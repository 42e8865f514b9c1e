"""One Docling converter: built once from the YAML's `docling:` options, then one document at a time.

Every document ends in exactly one of three states, so the counts never hide a problem:

    converted  Docling succeeded; the markdown is written.
    partial    Docling's partial success (some pages failed): the markdown is kept, the error
               names the failing pages.
    failed     no markdown (an older one is removed): a corrupt file, an exception, Docling's own
               timeout (it stops between page batches and returns truncated pages, which must not
               pass for a result) or a hard stop by the scheduler (see docling_pool).

Docling is imported only here and only when a converter is built, so listing documents needs none.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import polars as pl

SOURCE_ID = "doc_id"
STATUSES = ("converted", "partial", "failed")
PAGE_BREAK = "<!-- page break -->"  # docling.page_breaks: what marks a page break in the markdown
RESULT_SCHEMA = {SOURCE_ID: pl.String, "markdown_path": pl.String, "status": pl.String, "pages": pl.Int64,
                 "chars": pl.Int64, "elapsed_s": pl.Float64, "error": pl.String}
# The GPU guide's batch for the layout and OCR models on CUDA; Docling's own default (4) elsewhere.
GPU_BATCH, CPU_BATCH = 64, 4


class MissingWeights(RuntimeError):
    pass


class MissingPackages(RuntimeError):
    pass


def expand(path: str) -> str:
    return os.path.expanduser(os.path.expandvars(path))


def require_packages(ray: bool) -> None:
    """Docling (and Ray when `ray`) must be importable here; raises MissingPackages saying how to get them."""
    missing = [name for name in ("docling", *(("ray",) if ray else ())) if importlib.util.find_spec(name) is None]
    if missing:
        raise MissingPackages(
            f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not installed in this environment ({sys.executable}); "
            "fix: locally, install the project's docling extra (a project made without the ray-docling example gets it with "
            "`copier update --trust --data 'examples=[slurm, metaxy, ray-docling]'`, or add the extra to pyproject.toml and "
            "run `make lock`); on a cluster, set `requirements: workloads/requirements-docling.txt` on the component"
            + ("; or set ray.workers: 0 to convert without Ray" if missing == ["ray"] else "")
        )


def resolve_device(requested: str) -> str:
    """The accelerator a converter will use: `auto` becomes cuda:0 when a CUDA GPU is visible
    (torch.cuda), mps on Apple silicon, cpu otherwise; an explicit choice is kept."""
    if requested != "auto":
        return requested
    from docling.datamodel.accelerator_options import AcceleratorDevice
    from docling.utils.accelerator_utils import decide_device

    return str(decide_device(AcceleratorDevice.AUTO.value))


def _batch(options: dict, name: str, device: str) -> int:
    value = options.get(name)
    return int(value) if value else (GPU_BATCH if device.startswith("cuda") else CPU_BATCH)


def build_converter(options: dict, formats: Iterable[str]):
    """A Docling DocumentConverter for the YAML's docling options (models load here, once).

    Raises MissingWeights when the standard pipeline cannot load its models.
    """
    from docling.datamodel.accelerator_options import AcceleratorOptions
    from docling.datamodel.base_models import InputFormat
    from docling.datamodel.pipeline_options import NativePdfPipelineOptions, PdfPipelineOptions
    from docling.datamodel.settings import settings
    from docling.document_converter import DocumentConverter, PdfFormatOption

    device = resolve_device(options.get("device") or "auto")
    accelerator = AcceleratorOptions(device=device, num_threads=int(options.get("num_threads") or 1))
    artifacts = options.get("artifacts_path")
    artifacts = expand(artifacts) if artifacts else None
    timeout = options.get("document_timeout_s")
    settings.perf.page_batch_size = int(options.get("page_batch_size") or 4)
    if options.get("pipeline", "native") == "native":
        from docling.pipeline.native_pdf_pipeline import NativePdfPipeline

        pdf = PdfFormatOption(
            pipeline_cls=NativePdfPipeline,
            pipeline_options=NativePdfPipelineOptions(accelerator_options=accelerator, document_timeout=timeout),
        )
    else:
        pipeline_options = PdfPipelineOptions(
            accelerator_options=accelerator,
            artifacts_path=artifacts,
            do_ocr=bool(options.get("ocr", False)),
            do_table_structure=bool(options.get("table_structure", True)),
            document_timeout=timeout,
            layout_batch_size=_batch(options, "layout_batch_size", device),
            ocr_batch_size=_batch(options, "ocr_batch_size", device),
            table_batch_size=int(options.get("table_batch_size") or CPU_BATCH),
        )
        pdf = PdfFormatOption(pipeline_options=pipeline_options)
    allowed = [InputFormat(fmt) for fmt in formats]
    converter = DocumentConverter(allowed_formats=allowed, format_options={InputFormat.PDF: pdf})
    if InputFormat.PDF in allowed:
        try:
            # Load the layout/table models now: a worker without weights fails before any document.
            converter.initialize_pipeline(InputFormat.PDF)
        except Exception as exc:  # huggingface_hub and docling raise several types for missing weights
            raise MissingWeights(
                f"the {options.get('pipeline')} PDF pipeline could not load its models ({type(exc).__name__}: {str(exc)[:300]}); "
                "fix: prefetch them with `docling-tools models download -o DIR` on a machine with internet, "
                "set docling.artifacts_path to DIR, or use pipeline: native (text only, no models)"
            ) from None
    return converter, device


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)


def failed_row(doc_id: str, output_dir: str, error: str, elapsed_s: float) -> dict:
    """The record of a document that produced nothing; any older markdown of it is removed,
    since it would no longer describe the current file."""
    target = Path(expand(output_dir)) / f"{doc_id}.md"
    target.unlink(missing_ok=True)
    return {SOURCE_ID: doc_id, "markdown_path": str(target), "status": "failed", "pages": 0, "chars": 0,
            "error": error[:2000], "elapsed_s": round(elapsed_s, 4)}


def _page_list(pages: Iterable[int]) -> str:
    return ", ".join(str(p) for p in sorted(set(pages)))


class Converter:
    """Converts documents one by one with a Docling converter built once.

    Used in the workload's process, in a ConverterProcess (docling_worker) and as a Ray actor.
    `convert` never raises for a bad document: it returns its row (RESULT_SCHEMA) with the status.
    """

    def __init__(self, options: dict, formats: list[str], output_dir: str):
        started = time.perf_counter()
        self.converter, self.device = build_converter(options, formats)
        self.build_s = round(time.perf_counter() - started, 3)
        self.output_dir = Path(expand(output_dir))
        self.output = output_dir
        self.page_breaks = bool(options.get("page_breaks", False))

    def describe(self) -> dict:
        """Where this converter runs: {"device": "cpu" | "cuda:0" | ..., "build_s": seconds, "pid": int}."""
        return {"device": self.device, "build_s": self.build_s, "pid": os.getpid()}

    def convert(self, doc_id: str, path: str) -> dict:
        from docling.datamodel.base_models import ConversionStatus, FailureCategory

        started = time.perf_counter()
        target = self.output_dir / f"{doc_id}.md"
        try:
            result = self.converter.convert(path, raises_on_error=False)
        except Exception as exc:  # one bad document must not fail its batch
            return failed_row(doc_id, self.output, f"{type(exc).__name__}: {exc}", time.perf_counter() - started)
        errors = list(result.errors)
        message = "; ".join(e.error_message for e in errors)
        timed_out = [e for e in errors if e.category == FailureCategory.TIMEOUT]
        if timed_out:
            # Docling stopped between page batches and kept the pages so far: a truncated document is no result.
            return failed_row(doc_id, self.output, f"timed out: {timed_out[0].error_message}", time.perf_counter() - started)
        if result.status not in (ConversionStatus.SUCCESS, ConversionStatus.PARTIAL_SUCCESS):
            return failed_row(doc_id, self.output, message or f"docling reported {result.status.value}", time.perf_counter() - started)
        markdown = result.document.export_to_markdown(page_break_placeholder=PAGE_BREAK if self.page_breaks else None)
        write_atomic(target, markdown)
        row = {SOURCE_ID: doc_id, "markdown_path": str(target), "status": "converted",
               "pages": len(result.pages) or result.document.num_pages(), "chars": len(markdown), "error": message or None}
        if result.status == ConversionStatus.PARTIAL_SUCCESS:
            pages = [e.page_no for e in errors if e.page_no is not None]
            if not pages and result.input.page_count:
                # Page.page_no counts from 0, the pages we name from 1 (as ErrorItem.page_no does).
                pages = sorted(set(range(1, result.input.page_count + 1)) - {p.page_no + 1 for p in result.pages})
            row.update(status="partial", error=(f"pages {_page_list(pages)} failed: " if pages else "") + (message or "partial success"))
        row["error"] = row["error"][:2000] if row["error"] else None
        row["elapsed_s"] = round(time.perf_counter() - started, 4)
        return row
