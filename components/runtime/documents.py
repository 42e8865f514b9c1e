"""Document conversion for RayDoclingComponent: listing, cost-weighted batches, Docling, Ray Data.

    from hpc_runtime.documents import convert_increment

    convert_increment(FeatureJob.from_env(), log=print)

Docling and Ray are imported only where they are used, so listing documents (a step that runs
where the store is) needs neither. One converter is built per worker and reused for every batch;
a document that fails is recorded with its error and never fails its batch.
"""

from __future__ import annotations

import glob
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import polars as pl

from .increment import Feature, FeatureDataError, ingest
from .job import FeatureJob, file_signature
from .names import FORMATS

SOURCE_ID = "doc_id"
STATUSES = ("converted", "partial", "failed")
# Bytes of non-PDF input that cost about as much as one PDF page; a rough, documented estimate.
BYTES_PER_PAGE = {"docx": 20_000, "pptx": 60_000, "xlsx": 30_000, "html": 15_000, "md": 6_000, "asciidoc": 6_000, "csv": 30_000}
_PDF_PAGE = re.compile(rb"/Type\s*/Page(?![a-zA-Z])")
Log = Callable[[str], None]


def _expand(path: str) -> str:
    return os.path.expanduser(os.path.expandvars(path))


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


def plan_batches(costs: list[int], workers: int, batch_size: int) -> list[list[int]]:
    """Group document indices into batches of similar cost, largest first.

    A batch closes when it holds `batch_size` documents or reaches the target cost (the corpus
    cost spread over four batches per worker); a document costlier than the target goes alone.
    Handing out the costliest batches first keeps one large document from finishing last.
    """
    if not costs:
        return []
    order = sorted(range(len(costs)), key=lambda i: (-costs[i], i))
    target = max(1, sum(costs) // max(1, workers * 4))
    batches: list[list[int]] = []
    current: list[int] = []
    load = 0
    for i in order:
        if costs[i] >= target:
            batches.append([i])
            continue
        current.append(i)
        load += costs[i]
        if len(current) >= batch_size or load >= target:
            batches.append(current)
            current, load = [], 0
    if current:
        batches.append(current)
    return batches


class MissingWeights(RuntimeError):
    pass


class MissingPackages(RuntimeError):
    pass


def require_packages(workers: int) -> None:
    """Docling (and Ray when workers > 0) must be importable here; say how to get them if not."""
    import importlib.util

    missing = [name for name in ("docling", *(("ray",) if workers else ())) if importlib.util.find_spec(name) is None]
    if missing:
        raise MissingPackages(
            f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not installed in this environment ({sys.executable}); "
            "fix: locally, install the project's docling extra (a project made without the ray-docling example gets it with "
            "`copier update --trust --data 'examples=[slurm, metaxy, ray-docling]'`, or add the extra to pyproject.toml and "
            "run `make lock`); on a cluster, set `requirements: workloads/requirements-docling.txt` on the component"
            + ("; or set ray.workers: 0 to convert without Ray" if missing == ["ray"] else "")
        )


def build_converter(options: dict, formats: Iterable[str]):
    """A Docling DocumentConverter for the YAML's docling options (models load here, once)."""
    from docling.datamodel.accelerator_options import AcceleratorOptions
    from docling.datamodel.base_models import InputFormat
    from docling.datamodel.pipeline_options import NativePdfPipelineOptions, PdfPipelineOptions
    from docling.datamodel.settings import settings
    from docling.document_converter import DocumentConverter, PdfFormatOption

    accelerator = AcceleratorOptions(device=options.get("device", "auto"), num_threads=int(options.get("num_threads", 1)))
    artifacts = options.get("artifacts_path")
    artifacts = _expand(artifacts) if artifacts else None
    timeout = options.get("document_timeout_s")
    settings.perf.page_batch_size = int(options.get("page_batch_size", 4))
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
            layout_batch_size=int(options.get("layout_batch_size", 4)),
            ocr_batch_size=int(options.get("ocr_batch_size", 4)),
            table_batch_size=int(options.get("table_batch_size", 4)),
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
    return converter


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)


class Converter:
    """Converts documents one by one with a converter built once; used serially and as a Ray actor."""

    def __init__(self, options: dict, formats: list[str], output_dir: str):
        self.converter = build_converter(options, formats)
        self.output_dir = Path(_expand(output_dir))

    def convert(self, doc_id: str, path: str) -> dict:
        from docling.datamodel.base_models import ConversionStatus

        started = time.perf_counter()
        target = self.output_dir / f"{doc_id}.md"
        row = {SOURCE_ID: doc_id, "markdown_path": str(target), "status": "failed", "pages": 0, "chars": 0, "error": None}
        try:
            result = self.converter.convert(path, raises_on_error=False)
            errors = "; ".join(e.error_message for e in result.errors)[:2000] or None
            if result.status in (ConversionStatus.SUCCESS, ConversionStatus.PARTIAL_SUCCESS):
                markdown = result.document.export_to_markdown()
                _write_atomic(target, markdown)
                row.update(status="converted" if result.status == ConversionStatus.SUCCESS else "partial",
                           pages=len(result.pages) or result.document.num_pages(), chars=len(markdown), error=errors)
            else:
                row["error"] = errors or f"docling reported {result.status.value}"
        except Exception as exc:  # one bad document must not fail its batch
            row["error"] = f"{type(exc).__name__}: {exc}"[:2000]
        if row["status"] == "failed":
            # An output left from an older version of the document would no longer be true.
            target.unlink(missing_ok=True)
        row["elapsed_s"] = round(time.perf_counter() - started, 4)
        return row

    def __call__(self, batch: dict) -> dict:
        """Ray map_batches entry: one row per planned batch, each holding lists of documents."""
        rows = [self.convert(doc_id, path)
                for ids, paths in zip(batch["doc_ids"], batch["paths"])
                for doc_id, path in zip(list(ids), list(paths))]
        return {name: [row[name] for row in rows] for name in RESULT_SCHEMA}


RESULT_SCHEMA = {SOURCE_ID: pl.String, "markdown_path": pl.String, "status": pl.String, "pages": pl.Int64,
                 "chars": pl.Int64, "elapsed_s": pl.Float64, "error": pl.String}


def convert_serial(docs: pl.DataFrame, options: dict, formats: list[str], output_dir: str, batches: list[list[int]]) -> Iterator[pl.DataFrame]:
    converter = Converter(options, formats, output_dir)
    ids, paths = docs[SOURCE_ID].to_list(), docs["path"].to_list()
    for batch in batches:
        yield pl.DataFrame([converter.convert(ids[i], paths[i]) for i in batch], schema=RESULT_SCHEMA)


def _join_cluster(address: str, nodes: int, timeout_s: float) -> None:
    """Connect once the head answers, then wait until every node of the job has joined."""
    import ray

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            ray.init(address=address, logging_level="WARNING", log_to_driver=True)
            break
        except (ConnectionError, RuntimeError) as exc:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the Ray head at {address} did not answer within {timeout_s:.0f}s: {exc}; "
                                   "see the job's slurm-*.err for the ray start output") from None
            time.sleep(2)
    while (alive := sum(1 for node in ray.nodes() if node["Alive"])) < nodes:
        if time.monotonic() > deadline:
            ray.shutdown()
            raise RuntimeError(f"only {alive} of {nodes} Ray nodes joined within {timeout_s:.0f}s; "
                               "see the job's slurm-*.err (srun steps of ray start)")
        time.sleep(1)


def _ray_init(ray_options: dict) -> float:
    import ray

    started = time.perf_counter()
    if os.environ.get("RAY_ADDRESS"):
        # Inside a Slurm job: the job script is starting a cluster with the job's resources.
        _join_cluster(os.environ["RAY_ADDRESS"], int(os.environ.get("HPC_RAY_NODES", "1")),
                      float(os.environ.get("HPC_RAY_START_TIMEOUT_S", "180")))
    else:
        workers = int(ray_options.get("workers", 2))
        ray.init(
            num_cpus=workers * float(ray_options.get("cpus_per_worker", 1)),
            num_gpus=workers * float(ray_options.get("gpus_per_worker", 0)),
            object_store_memory=ray_options.get("object_store_memory_bytes"),
            include_dashboard=False,
            logging_level="WARNING",
        )
    return time.perf_counter() - started


def convert_ray(docs: pl.DataFrame, options: dict, formats: list[str], output_dir: str,
                batches: list[list[int]], ray_options: dict, log: Log) -> Iterator[pl.DataFrame]:
    """Ray Data map_batches over an actor pool; each planned batch is one row, yielded as it completes."""
    import ray

    log(f"ray: started in {_ray_init(ray_options):.1f}s, cluster resources {ray.cluster_resources()}")
    try:
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        context.execution_options.preserve_order = False
        ids, paths = docs[SOURCE_ID].to_list(), docs["path"].to_list()
        items = [{"doc_ids": [ids[i] for i in batch], "paths": [paths[i] for i in batch]} for batch in batches]
        dataset = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
            Converter,
            fn_constructor_kwargs={"options": options, "formats": formats, "output_dir": output_dir},
            batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=int(ray_options.get("workers", 2))),
            num_cpus=float(ray_options.get("cpus_per_worker", 1)),
            num_gpus=float(ray_options.get("gpus_per_worker", 0)),
        )
        for block in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
            yield pl.from_arrow(block).cast(RESULT_SCHEMA)
    finally:
        ray.shutdown()


def convert_documents(docs: pl.DataFrame, settings: dict, log: Log = print) -> Iterator[pl.DataFrame]:
    """Convert `docs` (doc_id, path, cost) batch by batch; workers: 0 converts in this process."""
    ray_options = settings.get("ray", {})
    workers = int(ray_options.get("workers", 2))
    batches = plan_batches(docs["cost"].to_list(), max(1, workers), int(ray_options.get("batch_size", 8)))
    formats = settings["input"]["formats"]
    require_packages(workers)
    args = (docs, settings.get("docling", {}), formats, settings["output"], batches)
    log(f"converting {docs.height} document(s) (~{int(docs['cost'].sum())} pages) in {len(batches)} batch(es) "
        f"with {'Ray, ' + str(workers) + ' worker(s)' if workers else 'one in-process converter'}")
    yield from convert_ray(*args, ray_options, log) if workers else convert_serial(*args)


def convert_increment(job, log: Log = print) -> dict:
    """The workload body: convert the new and stale documents and write each batch as it completes."""
    settings = job.feature.request["documents"]
    docs = job.samples(shard=False)  # one driver for the whole job: Ray spreads the work, not srun
    totals = {status: 0 for status in STATUSES} | {"pages": 0}
    failures: list[str] = []
    started = time.perf_counter()
    done = 0
    for frame in convert_documents(docs, settings, log):
        job.write(frame)
        done += frame.height
        counts = dict(frame.group_by("status").len().iter_rows())
        for status in STATUSES:
            totals[status] += int(counts.get(status, 0))
        totals["pages"] += int(frame["pages"].sum())
        for doc_id, error in frame.filter(pl.col("status") == "failed").select(SOURCE_ID, "error").iter_rows():
            failures.append(f"{doc_id}: {error}")
        log(f"batch done: {frame.height} document(s), {counts.get('failed', 0)} failed; "
            f"{done}/{docs.height} after {time.perf_counter() - started:.1f}s")
    elapsed = time.perf_counter() - started
    return {**totals, "documents": docs.height, "elapsed_s": round(elapsed, 3),
            "docs_per_s": round(docs.height / elapsed, 3) if elapsed > 0 else None, "failures": failures}


__all__ = ["FORMATS", "Converter", "convert_documents", "convert_increment", "list_documents", "plan_batches", "Feature"]
