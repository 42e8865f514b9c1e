"""MetaxyFeatureComponent: a Metaxy feature declared in YAML whose workload sees only what changed.

A root feature (no deps) runs a workload that lists samples with a provenance value per field;
a downstream feature runs its workload on the new and stale samples only, locally or as a Slurm
job, and writes results through Metaxy. Metaxy decides staleness per field: a sample is stale for
a field only when the upstream fields that field depends on changed.

The graph of all features under defs/ is validated at load time (core.features); the Metaxy steps
run where the store is (core.feature_steps); the workload runs through WorkloadComponent.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

import dagster as dg
import pydantic
from pydantic import PrivateAttr

from components.core import environments
from components.core.branches import BRANCH_TAG, Branch, deep_merge, load_branches, run_branch
from components.core.imports import workload_imports
from components.core.job_record import tag_run
from components.core.render import RUNTIME_DIR
from components.core.errors import ConfigError, Location
from components.core.feature_steps import LocalSteps, RemoteSteps, workload_data_failure
from components.core.features import FeatureDecl, FeatureGraph, scan, validate
from components.feature_scaffold import MetaxyFeatureScaffolder
from components.core.profiles import ClusterProfile, load_profile, resolve_cluster_name
from components.core.remote import SlurmRun
from components.runtime.names import REQUEST_ENV
from components.workload import CLUSTERS_DIR, WorkloadComponent, _doc, _line_map, _placed

DEFS_DIR = "defs"
LOCAL_STAGING_DIR = ".hpc/staging"
STORE_SUBDIR = "metaxy"


class FieldDepModel(dg.Resolvable, dg.Model):
    feature: Annotated[str, _doc("Upstream feature key; must be listed in the feature's deps.", "media/sample")]
    fields: Annotated[list[str], _doc("Fields of that feature this field reads.", ["audio"])]


class FieldModel(dg.Resolvable, dg.Model):
    key: Annotated[str, _doc("Field name.", "transcript")]
    code_version: Annotated[str | int, _doc("Bump when the code computing this field changes: every sample is recomputed.", "1", "2")] = "1"
    deps: Annotated[
        list[FieldDepModel] | None,
        _doc("Upstream fields this field depends on; omitted: every field of every upstream feature.",
             [{"feature": "media/sample", "fields": ["audio"]}]),
    ] = None


class LineageModel(dg.Resolvable, dg.Model):
    type: Annotated[Literal["identity", "aggregation", "expansion"], _doc("1:1, N:1 or 1:N between upstream and this feature.", "identity")] = "identity"
    on: Annotated[list[str] | None, _doc("Columns to group by (aggregation) or expand from (expansion).", ["video_id"])] = None


class FeatureDepModel(dg.Resolvable, dg.Model):
    feature: Annotated[str, _doc("Upstream feature key.", "media/sample")]
    select: Annotated[list[str] | None, _doc("Upstream columns to keep (after rename); default all.", ["path"])] = None
    rename: Annotated[dict[str, str] | None, _doc("Rename upstream columns, old: new.", {"path": "source_path"})] = None
    filters: Annotated[list[str] | None, _doc("SQL-like filters on upstream rows.", ["size > 0"])] = None
    lineage: Annotated[LineageModel | None, _doc("Cardinality between upstream and this feature.")] = None
    optional: Annotated[bool, _doc("Compute samples even when this upstream has no matching row.")] = False


class StoreModel(dg.Resolvable, dg.Model):
    kind: Annotated[
        Literal["delta", "duckdb", "postgres", "clickhouse", "custom"],
        _doc("Store backend. delta (default): many writers at once, no server.", "delta", "duckdb"),
    ] = "delta"
    path: Annotated[str | None, _doc("delta/duckdb: directory or file; $VARS expand where the store is; relative paths are under the project.", "$SCRATCH/metaxy")] = None
    url_env: Annotated[str | None, _doc("postgres/clickhouse: variable holding the connection string (a secret, never written).", "METAXY_PG_URL")] = None
    class_path: Annotated[str | None, _doc("custom: import path of a metaxy MetadataStore class.", "metaxy.ext.lancedb.LanceDBMetadataStore")] = None
    options: Annotated[dict[str, Any], _doc("Extra constructor arguments of the store class.", {"layout": "flat"})] = {}


@dg.scaffold_with(MetaxyFeatureScaffolder)
class MetaxyFeatureComponent(WorkloadComponent):
    """A Metaxy feature as an asset: only new and stale samples are computed, per field.

    Examples:
        .. code-block:: yaml

            type: components.MetaxyFeatureComponent
            attributes:
              feature: media/transcript
              id_columns: [sample_id]
              columns: {text: str}
              deps: [{feature: media/sample}]
              fields:
                - key: text
                  deps: [{feature: media/sample, fields: [audio]}]
              script: transcribe.py
              cluster: leonardo
    """

    feature: Annotated[str, _doc("Feature key, also the asset key: words joined by '/'.", "media/crop")]
    id_columns: Annotated[list[str], _doc("Columns that identify a sample.", ["sample_id"])]
    fields: Annotated[list[FieldModel], _doc("Fields tracked separately for staleness.", [{"key": "default"}])] = [FieldModel(key="default")]
    columns: Annotated[dict[str, str], _doc("Data columns and their types (str, int, float, bool, date, datetime, bytes, list[str], ...).", {"path": "str"})] = {}
    deps: Annotated[list[FeatureDepModel], _doc("Upstream features; none makes this a root feature whose workload lists samples.", [{"feature": "media/sample"}])] = []
    description: Annotated[str | None, _doc("Shown in the Dagster UI.")] = None
    store: Annotated[StoreModel | None, _doc("Metadata store; default a Delta store in the cluster's data_dir/metaxy.")] = None
    orphans: Annotated[Literal["keep", "delete"], _doc("What to do with stored samples whose source is gone.", "keep", "delete")] = "keep"
    require_all: Annotated[bool, _doc("Fail the step when the workload leaves samples of the increment unwritten.")] = True
    group_name: Annotated[str | None, _doc("Asset group.", "media")] = None
    owners: Annotated[list[str], _doc("Asset owners.", ["team:research-data"])] = []
    tags: Annotated[dict[str, str], _doc("Asset tags.", {"domain": "media"})] = {}

    _defs_file: Path | None = PrivateAttr(None)  # where it is declared (build_defs): a branch re-reads it

    # --- hooks -------------------------------------------------------------------------------

    def asset_keys(self) -> list[dg.AssetKey]:
        return [dg.AssetKey(self.feature.split("/"))]

    def declaration(self, defs_file: Path) -> FeatureDecl:
        attributes = self.model_dump(
            include={"feature", "id_columns", "fields", "columns", "deps", "description", "store", "cluster"},
            by_alias=True,
        )
        for dep in attributes["deps"]:
            for name in ("select", "rename", "filters", "lineage"):
                if dep.get(name) is None:
                    dep.pop(name, None)
        return FeatureDecl(key=self.feature, attributes=attributes, file=defs_file, lines=_line_map(defs_file))

    def environment_imports(self, project_root: Path) -> tuple[str, ...]:
        # Resolve, ingest and commit run on the login node with the runtime's increment module.
        return (*self.job_imports(project_root), *workload_imports(RUNTIME_DIR / "increment.py"))

    def store_config(self, profile: ClusterProfile, project_root: Path) -> dict:
        """The store as the runtime opens it; relative local paths anchor at the project root."""
        return _store_config(self.store.model_dump() if self.store else None, profile, project_root)

    def _check_stores(self, graph: FeatureGraph, project_root: Path, profile: ClusterProfile, mine: dict) -> None:
        for decl in graph.lineage(self.feature)[:-1]:
            cluster = decl.attributes.get("cluster")
            other_profile = load_profile(resolve_cluster_name(cluster, project_root), project_root / CLUSTERS_DIR) if cluster != self.cluster else profile
            theirs = _store_config(decl.attributes.get("store"), other_profile, project_root)
            if theirs != mine:
                raise ConfigError(
                    f"upstream feature {decl.key} uses store {theirs} but this feature uses {mine}",
                    fix="features that depend on each other must share one store: set the same store (or cluster) on both",
                    location=Location(key="store"),
                )

    def request(self, graph: FeatureGraph, store: dict, staging: str, run_id: str) -> dict:
        return {
            "target": self.feature,
            "specs": [decl.spec() for decl in graph.lineage(self.feature)],
            "store": store,
            "staging": staging,
            "orphans": self.orphans,
            "materialization_id": run_id,
        }

    def run_workload(self, context: dg.AssetExecutionContext, project_root: Path, steps, request: dict) -> list:
        """Run the workload on the staged request (locally or as a Slurm job); its Pipes results."""
        steps.stage(request)
        plan = self.plan(project_root, strict=True, extra_env=[(REQUEST_ENV, steps.request_path)])
        try:
            return list(self.execute(context, project_root, plan))
        except dg.Failure:
            # A workload that died on data the runtime refused: its message is the failure, not its traceback.
            refused = workload_data_failure(self.feature, steps.data_error())
            if refused is None:
                raise
            raise refused from None

    def list_samples(self, context: dg.AssetExecutionContext, project_root: Path, steps, request: dict) -> tuple[dict, list]:
        """Root feature: the workload emits the current listing, which is then ingested."""
        results = self.run_workload(context, project_root, steps, request)
        return steps.run("ingest", request), results

    def extra_metadata(self, counts: dict, results: list) -> dict[str, dg.MetadataValue]:
        """Further materialization metadata from the step counts and the workload's results."""
        return {}

    # --- execution ---------------------------------------------------------------------------

    def _steps(self, context: dg.AssetExecutionContext, project_root: Path, profile: ClusterProfile):
        run_id = context.run.run_id
        if profile.scheduler != "slurm":
            return LocalSteps(project_root / LOCAL_STAGING_DIR / run_id / self.op_name)
        run = SlurmRun(context, self.plan(project_root), project_root, self.remote_policy(project_root), self.op_name)
        base = run.base_dir()
        # The job's environment runs the steps on the login node, so it must exist first.
        environments.prepare(profile, project_root, run.transport, base, self.environment_imports(project_root), context.log.info)
        return RemoteSteps(run.transport, profile, project_root, base, f"{base}/jobs/{run_id}/{self.op_name}.metaxy")

    # --- branches ------------------------------------------------------------------------------

    def on_branch(self, branch: Branch, project_root: Path) -> tuple[MetaxyFeatureComponent, FeatureGraph]:
        """This feature as `branch` declares it (its `set` merged into the attributes) and the project's
        graph on that branch. Raises ConfigError (pydantic's ValidationError for a bad value)."""
        me = self
        if self.feature in branch.set:
            me = type(self).model_validate(deep_merge(self.model_dump(by_alias=True), branch.set[self.feature]))
            me._defs_file = self._defs_file
        return me, validate(scan(project_root / DEFS_DIR, branch), me.declaration(self._defs_file))

    def branch_files(self, profile: ClusterProfile, project_root: Path) -> dict[str, str]:
        """Columns naming files the workload writes, with their directory on main (a branch writes beside it)."""
        return {}

    def _check_branches(self, project_root: Path, keys: list[str], declared: set[str]) -> None:
        """Each branch's `set` for these feature keys must give valid attributes; a `set` key no feature
        has is refused too (it would change nothing). Raises ConfigError at branches.yaml's line."""
        for branch in load_branches(project_root).values():
            for key in branch.set:
                if key not in declared:
                    raise ConfigError(f"branch {branch.name} sets attributes of feature {key!r}, which no defs.yaml declares",
                                      fix=f"use a declared feature key: {', '.join(sorted(declared))}",
                                      location=branch.where("set", key))
                if key not in keys:
                    continue
                try:
                    self.on_branch(branch, project_root)
                except (pydantic.ValidationError, ConfigError) as exc:  # the attribute and its reason; the place is branches.yaml's
                    problem = exc.problem if isinstance(exc, ConfigError) else "; ".join(
                        f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
                    raise ConfigError(f"branch {branch.name}: its set for {key} does not give valid attributes: {problem}",
                                      fix="correct the attribute names and values under set (they are merged into defs.yaml's)",
                                      location=branch.where("set", key)) from None

    def materialize(self, context: dg.AssetExecutionContext, project_root: Path, graph: FeatureGraph) -> Iterator:
        """Compute the feature for one run: on main, or on the branch its tag or $HPC_BRANCH names."""
        try:
            branch = run_branch(context.run.tags, project_root)
            me, graph = self.on_branch(branch, project_root) if branch else (self, graph)
        except ConfigError as exc:
            raise dg.Failure(description=str(exc)) from None
        yield from me.compute(context, project_root, graph, branch)

    def compute(self, context: dg.AssetExecutionContext, project_root: Path, graph: FeatureGraph,
                branch: Branch | None = None) -> Iterator:
        profile = self.get_profile(project_root)
        store = self.store_config(profile, project_root)
        steps = self._steps(context, project_root, profile)
        request = self.request(graph, store, steps.staging, context.run.run_id)
        tags: dict[str, str] = {}
        if branch is not None:
            # Tagged so that the UI shows and filters it: the asset's history mixes main's and branches' runs.
            tags = {BRANCH_TAG: branch.name}
            if context.run.tags.get(BRANCH_TAG) != branch.name:  # chosen by $HPC_BRANCH: the run says so too
                tag_run(context.instance, context.run.run_id, tags)
            request["branch"] = {**branch.request(), "files": self.branch_files(profile, project_root)}
            subset = f"subset {branch.subset}" if branch.subset else "every sample"
            context.log.info(f"{self.feature}: on branch {branch.name} ({subset}"
                             + (f"; set {branch.set[self.feature]}" if self.feature in branch.set else "")
                             + f"): writes to the branch's store beside {store.get('path', store.get('kind'))}; "
                             "main's store and files are not touched until `hpc branch merge`")
        is_root = not self.deps
        counts: dict[str, Any] = {}
        if not is_root:
            counts = steps.run("resolve", request)
            _log_counts(context, counts)
            if counts["new"] + counts["stale"] == 0:
                if counts["orphaned"] and self.orphans == "delete":
                    counts["deleted"] = steps.run("commit", request)["deleted"]
                context.log.info(f"{self.feature}: nothing to compute; no workload started, no job submitted")
                steps.cleanup()
                yield dg.MaterializeResult(asset_key=self.asset_keys()[0], tags=tags, metadata={
                    **_metadata({**counts, "processed": 0, "job": "none: nothing to do"}), **self.extra_metadata(counts, [])})
                return
        if is_root:
            counts, results = self.list_samples(context, project_root, steps, request)
            _log_counts(context, counts)
        else:
            results = self.run_workload(context, project_root, steps, request)
            after = steps.run("commit", request)
            counts.update(processed=after["processed"], unprocessed=after["unprocessed"], deleted=after["deleted"])
            if after["unprocessed"] and self.require_all:
                raise dg.Failure(
                    f"{self.feature}: the workload wrote {after['processed']} of {counts['new'] + counts['stale']} samples; "
                    f"not written: {', '.join(after['unprocessed_examples'])}\n"
                    "  fix: write every sample of job.samples() (or set require_all: false to accept partial runs)"
                )
        context.log.info(f"{self.feature}: processed {counts['processed']} sample(s)")
        steps.cleanup()
        key = self.asset_keys()[0]
        metadata = {**_metadata(counts), **self.extra_metadata(counts, results)}
        reported = False
        for result in results:
            if isinstance(result, dg.MaterializeResult) and result.asset_key in (None, key):
                reported = True
                yield dg.MaterializeResult(asset_key=key, metadata={**(result.metadata or {}), **metadata},
                                           data_version=result.data_version, tags={**(result.tags or {}), **tags})
            else:
                yield result
        if not reported:  # the samples were listed by a step, not a workload
            yield dg.MaterializeResult(asset_key=key, metadata=metadata, tags=tags)

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        project_root = Path(context.project_root)
        defs_file = Path(context.path) / "defs.yaml"
        self._defs_file = defs_file
        try:
            decls = scan(project_root / DEFS_DIR)
            graph = validate(decls, self.declaration(defs_file))
            plan = self.plan(project_root)
            self._check_stores(graph, project_root, plan.profile, self.store_config(plan.profile, project_root))
            self._check_branches(project_root, [self.feature], {d.key for d in decls})
        except (ConfigError, ValueError) as exc:
            raise _placed(exc, defs_file) from None

        upstream = [dg.AssetKey(dep.feature.split("/")) for dep in self.deps]
        spec = dg.AssetSpec(
            key=self.asset_keys()[0],
            deps=upstream,  # Metaxy's own Dagster helper does not order steps; these do.
            description=self.description,
            group_name=self.group_name,
            owners=self.owners,
            tags=self.tags,
            kinds={"metaxy", "slurm" if plan.profile.scheduler == "slurm" else "python"},
            metadata={"metaxy/feature": self.feature, "metaxy/fields": ", ".join(f.key for f in self.fields)},
        )

        @dg.multi_asset(name=self.op_name, specs=[spec], op_tags=self.op_tags(plan, project_root),
                        description=f"Metaxy feature {self.feature}, computed by {plan.job.workload}")
        def _feature(context):  # unannotated: string annotations confuse dagster's check
            yield from self.materialize(context, project_root, graph)

        return dg.Definitions(assets=[_feature])


def _store_config(raw: dict | None, profile: ClusterProfile, project_root: Path) -> dict:
    """The store as the runtime opens it; relative local paths anchor at the project root."""
    if not raw:
        base = profile.paths.effective_data_dir().rstrip("/")
        raw = {"kind": "delta", "path": f"{base}/{STORE_SUBDIR}"}
    config = {k: v for k, v in raw.items() if v not in (None, {}) and k != "class_path"}
    if raw.get("class_path"):
        config["class"] = raw["class_path"]
    kind = config.setdefault("kind", "delta")
    if kind in ("delta", "duckdb"):
        if not config.get("path"):
            raise ConfigError(f"a {kind} store needs a path", fix="set store.path", location=Location(key="store.path"))
        path = config["path"]
        if profile.scheduler == "local" and not path.startswith(("/", "$", "~")) and "://" not in path:
            config["path"] = str((project_root / path).resolve())
    elif kind in ("postgres", "clickhouse") and not config.get("url_env"):
        raise ConfigError(f"a {kind} store needs url_env", fix="name the variable that holds the connection string",
                          location=Location(key="store.url_env"))
    elif kind == "custom" and not config.get("class"):
        raise ConfigError("a custom store needs class_path", fix="give the import path of the store class",
                          location=Location(key="store.class_path"))
    return config



def _log_counts(context: dg.AssetExecutionContext, counts: dict) -> None:
    parts = [f"{counts['new']} new", f"{counts['stale']} stale", f"{counts['orphaned']} orphaned"]
    if counts.get("retried"):  # stale because a stored value asked for it (retry), not a changed input
        retry = counts["retry"]
        parts.append(f"{counts['retried']} retried ({retry['column']} {', '.join(retry['values'])})")
    message = f"{counts['feature']} in {counts['store']}: " + ", ".join(parts)
    for field, n in counts.get("stale_fields", {}).items():
        message += f"\n  field {field!r} changed for {n} sample(s): {', '.join(counts['stale_examples'][field])}"
    if counts.get("orphan_examples"):
        message += f"\n  orphaned: {', '.join(counts['orphan_examples'])}"
    if counts.get("retried_examples"):
        message += f"\n  retried: {', '.join(counts['retried_examples'])}"
    context.log.info(message)


def _metadata(counts: dict) -> dict[str, dg.MetadataValue]:
    out: dict[str, dg.MetadataValue] = {}
    for name in ("new", "stale", "orphaned", "retried", "up_to_date", "processed", "unprocessed", "deleted", "samples",
                 "subset", "from_main"):
        if name in counts:
            out[name] = dg.MetadataValue.int(int(counts[name]))
    if "stale_fields" in counts:
        out["stale_fields"] = dg.MetadataValue.json(counts["stale_fields"])
    for name in ("store", "job", "branch"):
        if name in counts:
            out[name] = dg.MetadataValue.text(str(counts[name]))
    return out
