"""RayDoclingComponent: documents to markdown with Docling, scaled with Ray, incremental with Metaxy.

Two assets: the source listing (one row per file, its content hash as provenance) and the
conversion (one row per document: markdown path, status, pages, error). Only new and changed
documents are converted. The workload converts in its own process and uses Ray when the increment
is large enough to gain from it (ray.workers: auto): locally Ray starts in the workload; on a Slurm
profile the job script brings up a Ray cluster over the allocation (clusters/templates/ray_cluster.sh.j2).

The component translates YAML into two MetaxyFeatureComponent-style features (core.documents)
and reuses their steps; the conversion itself is hpc_runtime.documents.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Literal

import dagster as dg
from pydantic import PrivateAttr

from components.core import documents
from components.core.errors import ConfigError, Location
from components.core.features import FeatureDecl, scan, validate
from components.core.profiles import ClusterProfile
from components.core.render import JobSpec
from components.core.units import parse_mem_mb
from components.feature_scaffold import RayDoclingScaffolder
from components.metaxy_feature import DEFS_DIR, MetaxyFeatureComponent, StoreModel
from components.runtime.names import FORMATS, beside
from components.workload import WorkloadComponent, _doc, _line_map, _placed

DOCUMENTS_SUBDIR = "docling"
RETRY_STATUSES = ("failed", "partial")  # a `converted` document is converted again only when its file changes


class DocumentInput(dg.Resolvable, dg.Model):
    path: Annotated[str, _doc("Directory (searched recursively) or glob of the documents, where they live: the project "
                              "for a local cluster, the cluster's filesystem otherwise; $VARS expand there.",
                              "workloads/example_documents", "$WORK/corpus/**/*.pdf")]
    formats: Annotated[list[Literal[tuple(FORMATS)]], _doc("Formats to convert, chosen by file suffix.", ["pdf", "docx", "html", "md"])] = ["pdf", "docx", "html", "md"]
    signature: Annotated[Literal["content", "stat"], _doc("Change detection: a hash of the bytes, or size and mtime (cheaper, but a touch re-converts).", "content")] = "content"


class DocumentFeatures(dg.Resolvable, dg.Model):
    source: Annotated[str, _doc("Feature (and asset) key of the document listing.", "docs/source")]
    converted: Annotated[str, _doc("Feature (and asset) key of the conversion.", "docs/markdown")]


class DoclingOptions(dg.Resolvable, dg.Model):
    pipeline: Annotated[Literal["native", "standard"], _doc(
        "PDF pipeline. native: the PDF's text layer, no models (works offline, no tables or reading order). "
        "standard: layout and table models, which need weights (artifacts_path).", "native", "standard")] = "native"
    ocr: Annotated[bool, _doc("standard pipeline: OCR scanned pages.")] = False
    table_structure: Annotated[bool, _doc("standard pipeline: recover table structure.")] = True
    page_breaks: Annotated[bool, _doc("Mark each page break in the markdown with <!-- page break --> (for chunking by page).")] = False
    device: Annotated[Literal["auto", "cpu", "cuda", "mps"], _doc(
        "Accelerator for the layout, table and OCR models. auto: CUDA when a GPU is visible to the converter (torch), "
        "Apple's MPS, else CPU; the one chosen is logged and in the asset's metadata.", "cuda")] = "auto"
    artifacts_path: Annotated[str | None, _doc("Prefetched model weights (`docling-tools models download -o DIR`) for "
                                               "nodes without internet; sets HF_HUB_OFFLINE=1.", "$WORK/docling-models")] = None
    num_threads: Annotated[int, _doc("Threads per converter.", 1, 4)] = 1
    page_batch_size: Annotated[int, _doc("Pages processed together.", 4)] = 4
    layout_batch_size: Annotated[int | None, _doc("standard pipeline: layout model batch; default 64 on a CUDA GPU (Docling's GPU guide), 4 elsewhere.", 64)] = None
    ocr_batch_size: Annotated[int | None, _doc("standard pipeline: OCR batch; default 64 on a CUDA GPU, 4 elsewhere.", 4)] = None
    table_batch_size: Annotated[int, _doc("standard pipeline: table model batch.", 4)] = 4
    document_timeout_s: Annotated[float | None, _doc(
        "Seconds one document may take. Docling stops between pages at this limit; a document still converting at "
        "1.5x it (grace at least 0.5 s, at most 60 s) is stopped wherever it is: its converter process or Ray actor is "
        "killed and replaced. Either way the document is recorded as failed (timed out), never as a truncated result.", 300)] = None


class RayOptions(dg.Resolvable, dg.Model):
    workers: Annotated[int | Literal["auto"], _doc(
        "Converter actors (each loads Docling once). auto: convert in the workload's process, and start Ray in the "
        "background with CPUs / cpus_per_worker actors only when the rest of the increment would take longer than "
        "starting it (measured as it goes). 0: never Ray. N: N actors; the workload's process converts until they are ready.",
        "auto", 0, 8)] = "auto"
    batch_size: Annotated[int, _doc("Most results written to the metadata store at once (they are also written every 5 s).", 8)] = 8
    cpus_per_worker: Annotated[float, _doc("CPUs each actor reserves.", 1)] = 1.0
    gpus_per_worker: Annotated[float, _doc("GPUs each actor reserves (0.5 shares a GPU between two).", 0, 1)] = 0.0
    object_store_memory: Annotated[str | None, _doc("Ray object store per node, such as 2G; default Ray's share of memory.", "2G")] = None


def _bytes(size: str | None) -> int | None:
    return parse_mem_mb(size) * 1024 * 1024 if size else None


@dg.scaffold_with(RayDoclingScaffolder)
class RayDoclingComponent(WorkloadComponent):
    """Converts a corpus of PDF, Word, HTML and Markdown documents to markdown with Docling, on Ray when it pays off.

    Only new or changed documents are converted (Metaxy field-level provenance); a document that
    fails is recorded with its error and does not fail the others.

    Examples:
        .. code-block:: yaml

            type: components.RayDoclingComponent
            attributes:
              input: {path: "$WORK/corpus", formats: [pdf, docx]}
              features: {source: docs/source, converted: docs/markdown}
              docling: {pipeline: standard, artifacts_path: "$WORK/docling-models", device: cuda}
              ray: {workers: 8, gpus_per_worker: 0.5}
              resources: {nodes: 2, gpus: 4, cpus_per_task: 32, time: "04:00:00"}
              cluster: leonardo
    """

    script: Annotated[str, _doc("Workload path relative to workloads/; the shipped one calls hpc_runtime.documents.", "convert_documents.py")] = "convert_documents.py"
    requirements: Annotated[str | None, _doc("Job environment for venv-building profiles: Docling, Ray and the runtime's pins.",
                                             "workloads/requirements-docling.txt")] = "workloads/requirements-docling.txt"
    input: Annotated[DocumentInput, _doc("The documents to convert.")]
    features: Annotated[DocumentFeatures, _doc("Metaxy feature keys of the listing and the conversion.")]
    output: Annotated[str | None, _doc("Directory for the markdown files (<doc_id>.md); default <data_dir>/docling/<converted key>.", "$SCRATCH/markdown")] = None
    docling: Annotated[DoclingOptions, _doc("Docling conversion options.")] = DoclingOptions()
    ray: Annotated[RayOptions, _doc("Ray options: who converts (workers) and what each actor reserves.")] = RayOptions()
    retry: Annotated[list[Literal[RETRY_STATUSES]], _doc(
        "Statuses converted again on the next run even if the file did not change; [] tries a failed document again only "
        "when its file changes. A launch overrides it for one run: run config ops.<conversion op>.config.retry.",
        ["failed"], ["failed", "partial"])] = []
    code_version: Annotated[str | int, _doc("Bump to re-convert everything (Docling options that change the output do so by themselves).", "2")] = "1"
    store: Annotated[StoreModel | None, _doc("Metadata store; default a Delta store in the cluster's data_dir/metaxy.")] = None
    orphans: Annotated[Literal["keep", "delete"], _doc("What to do with conversions whose document is gone.", "delete")] = "keep"
    description: Annotated[str | None, _doc("Shown in the Dagster UI for the conversion asset.")] = None
    group_name: Annotated[str | None, _doc("Asset group.", "documents")] = None
    owners: Annotated[list[str], _doc("Asset owners.", ["team:research-data"])] = []
    tags: Annotated[dict[str, str], _doc("Asset tags.", {"domain": "documents"})] = {}

    _defs_file: Path | None = PrivateAttr(None)  # where it is declared (build_defs): a branch re-reads it

    def asset_keys(self) -> list[dg.AssetKey]:
        return [dg.AssetKey(self.features.converted.split("/"))]

    def get_job_spec(self, project_root: Path, extra_env: Sequence[tuple[str, str]] = ()) -> JobSpec:
        """The conversion job: the workload as a Ray driver, Ray brought up over the job's nodes."""
        spec = super().get_job_spec(project_root, extra_env)
        env = list(spec.env)
        if self.docling.artifacts_path:
            # Compute nodes often have no internet: use the prefetched weights, never download.
            env += [("DOCLING_ARTIFACTS_PATH", self.docling.artifacts_path), ("HF_HUB_OFFLINE", "1")]
        return replace(spec, launcher="ray", env=tuple(env), ray_object_store_bytes=_bytes(self.ray.object_store_memory))

    # --- translation ---------------------------------------------------------------------------

    def _declarations(self, defs_file: Path) -> list[FeatureDecl]:
        attributes = self.model_dump(mode="json", by_alias=True)
        lines = _line_map(defs_file)
        return [FeatureDecl(key=key, attributes=attrs, file=defs_file, lines=lines, prefix=("attributes", *path))
                for key, attrs, path in documents.declarations(attributes)]

    def _resolved_path(self, raw: str, profile: ClusterProfile, project_root: Path) -> str:
        """Relative paths anchor at the project (local) or at the cluster's base_dir."""
        if raw.startswith(("/", "$", "~")):
            return raw
        if profile.scheduler == "local":
            return str((project_root / raw).resolve())
        return f"{profile.paths.base_dir.rstrip('/')}/{raw}"

    def settings(self, profile: ClusterProfile, project_root: Path) -> dict:
        """What the listing step and the workload read from the request (JSON)."""
        output = self.output or f"{profile.paths.effective_data_dir().rstrip('/')}/{DOCUMENTS_SUBDIR}/{self.features.converted}"
        ray = {**self.ray.model_dump(), "object_store_memory_bytes": _bytes(self.ray.object_store_memory)}
        return {
            "input": {**self.input.model_dump(), "path": self._resolved_path(self.input.path, profile, project_root)},
            "output": self._resolved_path(output, profile, project_root),
            "docling": self.docling.model_dump(),
            "ray": ray,
        }

    def _feature(self, decl: FeatureDecl, role: type[MetaxyFeatureComponent]) -> MetaxyFeatureComponent:
        shared = self.model_dump(include={"script", "args", "env", "forward_env", "resources", "submission", "cluster", "store",
                                          "orphans", "requirements"})
        attributes = {k: v for k, v in decl.attributes.items() if k not in ("store", "cluster")}
        feature = role.model_validate({**attributes, **shared, "group_name": self.group_name, "owners": self.owners,
                                       "tags": self.tags, "name": _op_name(self.name, role)})
        feature._owner = self
        feature._decl = decl
        return feature

    def _validate(self, defs_file: Path, project_root: Path):
        self._defs_file = defs_file
        source_decl, converted_decl = self._declarations(defs_file)
        decls = scan(project_root / DEFS_DIR)
        source_graph = validate(decls, source_decl)
        graph = validate(decls, converted_decl)
        if (self.ray.workers != "auto" and self.ray.workers < 0) or self.ray.batch_size < 1:
            raise ConfigError("ray.workers must be auto or >= 0 and ray.batch_size >= 1", fix="for example workers: auto, batch_size: 8",
                              location=Location(key="ray"))
        try:
            _bytes(self.ray.object_store_memory)
        except ValueError as exc:
            raise ConfigError(str(exc), fix="write it like 2G or 512M", location=Location(key="ray.object_store_memory")) from None
        source = self._feature(source_decl, _DocumentSource)
        converted = self._feature(converted_decl, _DocumentConversion)
        converted._check_branches(project_root, [self.features.source, self.features.converted], {d.key for d in decls})
        return source, converted, source_graph, graph

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        project_root = Path(context.project_root)
        defs_file = Path(context.path) / "defs.yaml"
        try:
            source, converted, source_graph, graph = self._validate(defs_file, project_root)
            plan = converted.plan(project_root)
            converted._check_stores(graph, project_root, plan.profile, converted.store_config(plan.profile, project_root))
        except (ConfigError, ValueError) as exc:
            raise _placed(exc, defs_file) from None

        kinds = {"docling", "ray", "metaxy", "slurm" if plan.profile.scheduler == "slurm" else "python"}
        source_spec = dg.AssetSpec(
            key=source.asset_keys()[0], group_name=self.group_name, owners=self.owners, tags=self.tags,
            description=f"Documents under {self.input.path} ({', '.join(self.input.formats)}), one row per file with its {self.input.signature} signature",
            kinds={"metaxy", "python"}, metadata={"metaxy/feature": source.feature},
        )
        converted_spec = dg.AssetSpec(
            key=converted.asset_keys()[0], deps=[source_spec.key], group_name=self.group_name, owners=self.owners, tags=self.tags,
            description=self.description or f"Markdown of {self.features.source} by Docling ({self.docling.pipeline} pipeline) on Ray",
            kinds=kinds, metadata={"metaxy/feature": converted.feature, "docling/pipeline": self.docling.pipeline},
        )

        @dg.multi_asset(name=source.op_name, specs=[source_spec], op_tags={"hpc/cluster": plan.profile.name},
                        description=f"List the documents of {self.features.source}")
        def _source(context):
            yield from source.materialize(context, project_root, source_graph)

        @dg.multi_asset(name=converted.op_name, specs=[converted_spec], op_tags={"hpc/cluster": plan.profile.name},
                        description=f"Convert new and changed documents of {self.features.source} with Docling on Ray",
                        config_schema={"retry": dg.Field([str], is_required=False, description=RETRY_CONFIG_HELP)})
        def _converted(context):
            converted._retry = _launch_retry(context.op_execution_context.op_config, converted.op_name, self.retry)
            yield from converted.materialize(context, project_root, graph)

        return dg.Definitions(assets=[_source, _converted])


RETRY_CONFIG_HELP = (f"Statuses ({', '.join(RETRY_STATUSES)}) converted again in this run even if their file did not change; "
                     "[] for none. Omitted: the component's `retry` in defs.yaml.")


def _launch_retry(config: dict | None, op_name: str, configured: list[str]) -> list[str]:
    """The statuses to retry in this run: the launch's run config (ops.<op>.config.retry), else defs.yaml's.

    Raises dg.Failure naming the allowed statuses for any other value, before anything runs.
    """
    values = (config or {}).get("retry")
    if values is None:
        return list(configured)
    wrong = [v for v in values if v not in RETRY_STATUSES]
    if wrong:
        raise dg.Failure(
            f"run config ops.{op_name}.config.retry: {', '.join(map(repr, wrong))} cannot be retried; "
            f"allowed: {', '.join(RETRY_STATUSES)}\n"
            f"  fix: for example {{\"ops\": {{\"{op_name}\": {{\"config\": {{\"retry\": [\"failed\"]}}}}}}}}, "
            "or [] to retry nothing (a converted document is converted again when its file changes)"
        )
    return list(dict.fromkeys(values))


def _op_name(name: str | None, role: type) -> str | None:
    if name is None:
        return None  # derived from the feature key
    return f"{name}_source" if role is _DocumentSource else name


class _DocumentFeature(MetaxyFeatureComponent):
    """One of a RayDoclingComponent's two features; never declared in YAML by itself."""

    _owner: RayDoclingComponent | None = PrivateAttr(None)
    _decl: FeatureDecl | None = PrivateAttr(None)
    _settings: dict = PrivateAttr(default_factory=dict)

    def declaration(self, defs_file: Path) -> FeatureDecl:
        return self._decl

    def request(self, graph, store: dict, staging: str, run_id: str) -> dict:
        return {**super().request(graph, store, staging, run_id), "documents": self._settings}

    def on_branch(self, branch, project_root: Path):
        """The feature of the owner as `branch` declares it (the `set` of either of its feature keys)."""
        owner = self._owner
        keys = [owner.features.source, owner.features.converted]
        if any(k in branch.set for k in keys):
            owner = type(owner).model_validate(branch.attributes(owner.model_dump(by_alias=True), keys))
            owner._defs_file = self._owner._defs_file
        decl = next(d for d in owner._declarations(owner._defs_file) if d.key == self.feature)
        me = owner._feature(decl, type(self))
        if isinstance(me, _DocumentConversion):
            me._retry = self._retry
        return me, validate(scan(project_root / DEFS_DIR, branch), decl)

    def branch_files(self, profile, project_root: Path) -> dict[str, str]:
        return {"markdown_path": self._owner.settings(profile, project_root)["output"]} if isinstance(self, _DocumentConversion) else {}

    def compute(self, context, project_root: Path, graph, branch=None):
        self._settings = self._owner.settings(self.get_profile(project_root), project_root)
        if branch is not None:  # the branch's markdown goes beside main's, which stays as it is until merged
            self._settings["output"] = beside(self._settings["output"], branch.name)
        yield from super().compute(context, project_root, graph, branch)


class _DocumentSource(_DocumentFeature):
    def list_samples(self, context, project_root: Path, steps, request: dict) -> tuple[dict, list]:
        counts = steps.run("list-documents", request)
        formats = ", ".join(f"{n} {fmt}" for fmt, n in counts["formats"].items())
        context.log.info(f"{self.feature}: {counts['samples']} document(s) ({formats}), ~{counts['pages_estimated']} pages")
        return counts, []

    def extra_metadata(self, counts: dict, results: list) -> dict[str, dg.MetadataValue]:
        return {"documents": dg.MetadataValue.int(int(counts.get("samples", 0))),
                "formats": dg.MetadataValue.json(counts.get("formats", {})),
                "pages_estimated": dg.MetadataValue.int(int(counts.get("pages_estimated", 0)))}


class _DocumentConversion(_DocumentFeature):
    _retry: list[str] = PrivateAttr(default_factory=list)  # this run's statuses to convert again (_launch_retry)

    def request(self, graph, store: dict, staging: str, run_id: str) -> dict:
        request = super().request(graph, store, staging, run_id)
        if self._retry:  # the runtime makes stored rows with these statuses stale (Metaxy staleness predicates)
            request["retry"] = {"column": "status", "values": list(self._retry)}
        return request

    def get_job_spec(self, project_root: Path, extra_env: Sequence[tuple[str, str]] = ()) -> JobSpec:
        return self._owner.get_job_spec(project_root, extra_env)

    def extra_metadata(self, counts: dict, results: list) -> dict[str, dg.MetadataValue]:
        out = {"skipped": dg.MetadataValue.int(int(counts.get("up_to_date", 0)))}
        if not results:  # nothing to convert: say so in the same terms
            out.update(converted=dg.MetadataValue.int(0), failed=dg.MetadataValue.int(0))
        return out
