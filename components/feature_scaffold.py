"""`dg scaffold defs` for the Metaxy components: a defs.yaml and a workload that work as written.

A scaffolded feature passes `dg check defs` and materializes locally without edits, so the user
starts from something running and changes it, instead of from `attributes: {}`:

  dg scaffold defs components.MetaxyFeatureComponent files
      a root feature: one sample per file under --source (default workloads/), size and mtime as provenance
  dg scaffold defs components.MetaxyFeatureComponent media/caption --upstream media/sample
      a downstream feature: its workload reads the columns samples() returns (the upstream's) and writes one
  dg scaffold defs components.RayDoclingComponent reports
      documents (a folder with one example) converted to markdown, features reports/source and reports/markdown
"""

from __future__ import annotations

import difflib
import functools
import re
import sys
from pathlib import Path, PurePosixPath

import click
import dagster as dg
from pydantic import BaseModel, Field

from components.core.errors import ConfigError, Location
from components.core.features import KEY_PATTERN, scan
from components.core.render import WORKLOADS_DIR

DEFS_DIR = "defs"
ROOT_FIELD, ROOT_SIGNATURE = "content", "content_sig"
DOCLING_SCRIPT = "convert_documents.py"


class FeatureScaffoldParams(BaseModel):
    feature: str | None = Field(None, description="Feature (and asset) key (default: the path under defs/, such as media/caption).")
    upstream: str | None = Field(None, description="Upstream feature key: the workload computes a column from its samples. "
                                                    "Without it: a root feature listing the files under --source.")
    source: str = Field(WORKLOADS_DIR, description="Root feature: the directory whose files are listed, relative to the project.")
    script: str | None = Field(None, description="Workload file name under workloads/ (default: <name>.py).")
    cluster: str | None = Field(None, description="Cluster profile name (default: $HPC_CLUSTER, else [tool.hpc] cluster, else local).")


class DoclingScaffoldParams(BaseModel):
    input: str | None = Field(None, description="Directory of the documents, relative to the project "
                                                "(default: workloads/<name>_documents, created with one example).")
    features: str | None = Field(None, description="Prefix of the two feature keys <prefix>/source and <prefix>/markdown "
                                                   "(default: the path under defs/).")
    cluster: str | None = Field(None, description="Cluster profile name (default: $HPC_CLUSTER, else [tool.hpc] cluster, else local).")


_ROOT_STUB = '''\
"""Root feature {feature}: one sample per file under --source; a file's size and mtime are its provenance.

A changed file makes its sample stale, so features downstream recompute it alone. Point --source
(args: in defs.yaml) at your data, and add columns to the frame and to columns: in defs.yaml.
"""

import argparse
from pathlib import Path

import polars as pl
from dagster_pipes import open_dagster_pipes

from hpc_runtime.job import FeatureJob, file_signature


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--source", required=True)
    args = parser.parse_args()
    with open_dagster_pipes() as pipes:
        source = Path(args.source).resolve()
        files = sorted(p for p in source.iterdir() if p.is_file() and not p.name.startswith("."))
        frame = pl.DataFrame(
            {{
                "{id}": [p.name for p in files],
                "path": [str(p) for p in files],
                "{signature}": [file_signature(str(p)) for p in files],
            }},
            schema={{"{id}": pl.String, "path": pl.String, "{signature}": pl.String}},
        )
        job = FeatureJob.from_env()
        job.emit(frame, provenance={{"{field}": "{signature}"}})
        pipes.log.info(f"listed {{frame.height}} file(s) under {{source}}")


if __name__ == "__main__":
    main()
'''

_DOWNSTREAM_STUB = '''\
"""Feature {feature}: computes {result} for the new and stale samples of {upstream} only."""

import polars as pl
from dagster_pipes import open_dagster_pipes

from hpc_runtime.job import FeatureJob


def main() -> None:
    with open_dagster_pipes() as pipes:
        job = FeatureJob.from_env()
        # Only the samples that are new or whose upstream changed, with these columns:
{columns}
        #   hpc_status: "new" or "stale"
        samples = job.samples()
        # Replace with the real work. Write the id columns and every column declared under columns:
        # in defs.yaml, with its declared type ({result}: str); a value that would change is refused.
        results = samples.select({ids}, {result}={expression})
        job.write(results)
        pipes.log.info(f"computed {{results.height}} sample(s) of {feature}")


if __name__ == "__main__":
    main()
'''

_EXAMPLE_DOCUMENT = """\
# Example document

Put the documents to convert in this folder (PDF, Word, HTML, Markdown), or point
`input.path` in defs.yaml at them. Only new and changed documents are converted.
"""


def _project_root(request: dg.ScaffoldRequest) -> Path:
    return Path(request.project_root or Path.cwd())


def _default_key(request: dg.ScaffoldRequest) -> str:
    """The target's path under defs/ as a feature key (media/caption), lower-cased and cleaned."""
    target = Path(request.target_path)
    try:
        parts = target.resolve().relative_to((_project_root(request) / DEFS_DIR).resolve()).parts
    except ValueError:
        parts = (target.name,)
    return "/".join(re.sub(r"[^a-z0-9_-]+", "_", p.lower()).strip("_-") or "feature" for p in parts)


def _checked_key(key: str, what: str, taken: set[str]) -> str:
    if not KEY_PATTERN.match(key):
        raise ConfigError(f"{what} {key!r} is not a valid feature key",
                          fix="use lower-case words joined by '/', such as media/caption", location=Location(key=f"--{what}"))
    if key in taken:
        raise ConfigError(f"feature {key} is already declared under {DEFS_DIR}/",
                          fix="choose another name (--feature), or scaffold a feature downstream of it with --upstream",
                          location=Location(key=f"--{what}"))
    return key


def _script(request: dg.ScaffoldRequest, given: str | None) -> tuple[str, Path]:
    """The workload's name under workloads/ and its path; a default name never replaces a file or the stdlib."""
    name = given or f"{Path(request.target_path).name}.py"
    stem = PurePosixPath(name).stem
    if given is None and stem in sys.stdlib_module_names:
        name = f"{stem}_job.py"  # Python would import the script instead of the standard module
    path = _project_root(request) / WORKLOADS_DIR / name
    if given is None and path.exists():
        raise ConfigError(f"{WORKLOADS_DIR}/{name} already exists",
                          fix="pass --script with a new file name (or the existing file's name to use it as is)",
                          location=Location(key="--script"))
    return name, path


def _refusing(scaffold):
    """A scaffolder's ConfigError as dg's one-line usage error, leaving no empty target folder behind."""

    @functools.wraps(scaffold)
    def wrapper(self, request: dg.ScaffoldRequest) -> None:
        try:
            scaffold(self, request)
        except ConfigError as exc:
            target = Path(request.target_path)
            if target.is_dir() and not any(target.iterdir()):
                target.rmdir()  # dg creates it first; left empty it would block the corrected command
            raise click.ClickException(str(exc)) from None

    return wrapper


def _write_new(path: Path, text: str) -> None:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def _downstream(decls: dict, upstream: str, feature: str) -> tuple[dict, str]:
    """Attributes and workload of a feature computed from `upstream`'s samples (same ids, 1:1)."""
    if upstream not in decls:
        close = difflib.get_close_matches(upstream, list(decls), n=1)
        known = ", ".join(sorted(decls)) or "none yet: scaffold a root feature first (without --upstream)"
        raise ConfigError(f"upstream feature {upstream!r} is not declared under {DEFS_DIR}/",
                          fix=(f"did you mean {close[0]}? " if close else "") + f"declared features: {known}",
                          location=Location(key="--upstream"))
    up = decls[upstream]
    ids = list(up.id_columns)
    upstream_columns = dict(up.columns)
    result = next(c for c in ("result", *(f"result_{i}" for i in range(1, 100))) if c not in upstream_columns and c not in ids)
    source_column = next(iter(upstream_columns), ids[0])
    attributes = {
        "feature": feature,
        "description": f"Computed from {upstream}",
        "id_columns": ids,
        "columns": {result: "str"},
        "deps": [{"feature": upstream}],
        "fields": [{"key": result, "code_version": "1"}],
    }
    listed = [f"        #   {c}: {t}" for c, t in [*((i, "id") for i in ids), *upstream_columns.items()]]
    workload = _DOWNSTREAM_STUB.format(
        feature=feature, upstream=upstream, result=result, columns="\n".join(listed),
        ids=", ".join(repr(i) for i in ids), expression=f"pl.col({source_column!r}).cast(pl.String)",
    )
    return attributes, workload


class MetaxyFeatureScaffolder(dg.Scaffolder[FeatureScaffoldParams]):
    """`dg scaffold defs components.MetaxyFeatureComponent NAME [--upstream KEY]`: a feature that runs as written."""

    @classmethod
    def get_scaffold_params(cls) -> type[FeatureScaffoldParams]:
        return FeatureScaffoldParams

    @_refusing
    def scaffold(self, request: dg.ScaffoldRequest[FeatureScaffoldParams]) -> None:
        params = request.params
        project_root = _project_root(request)
        decls = {d.key: d for d in scan(project_root / DEFS_DIR)}
        feature = _checked_key(params.feature or _default_key(request), "feature", set(decls))
        script, workload = _script(request, params.script)
        if params.upstream:
            attributes, text = _downstream(decls, params.upstream, feature)
        else:
            if not (project_root / params.source).is_dir():
                raise ConfigError(f"source directory {params.source} does not exist",
                                  fix="pass --source with a directory relative to the project", location=Location(key="--source"))
            attributes = {
                "feature": feature,
                "description": f"One sample per file under {params.source}",
                "id_columns": ["sample_id"],
                "columns": {"path": "str"},
                "fields": [{"key": ROOT_FIELD}],
                "args": ["--source", params.source],
            }
            text = _ROOT_STUB.format(feature=feature, id="sample_id", field=ROOT_FIELD, signature=ROOT_SIGNATURE)
        _write_new(workload, text)
        attributes["script"] = script
        attributes["resources"] = {"cpus_per_task": 1, "mem": "1G", "time": "00:10:00"}
        if params.cluster:
            attributes["cluster"] = params.cluster
        dg.scaffold_component(request, attributes)


class RayDoclingScaffolder(dg.Scaffolder[DoclingScaffoldParams]):
    """`dg scaffold defs components.RayDoclingComponent NAME`: documents to markdown, runs as written."""

    @classmethod
    def get_scaffold_params(cls) -> type[DoclingScaffoldParams]:
        return DoclingScaffoldParams

    @_refusing
    def scaffold(self, request: dg.ScaffoldRequest[DoclingScaffoldParams]) -> None:
        params = request.params
        project_root = _project_root(request)
        taken = {d.key for d in scan(project_root / DEFS_DIR)}
        prefix = params.features or _default_key(request)
        source = _checked_key(f"{prefix}/source", "features", taken)
        converted = _checked_key(f"{prefix}/markdown", "features", taken)
        if not (project_root / WORKLOADS_DIR / DOCLING_SCRIPT).is_file():
            raise ConfigError(f"{WORKLOADS_DIR}/{DOCLING_SCRIPT} (the conversion workload) is missing",
                              fix="projects generated without the ray-docling example lack it: run `copier update` and add "
                                  "ray-docling to the examples, or copy it from the template")
        documents = params.input or f"{WORKLOADS_DIR}/{Path(request.target_path).name}_documents"
        if params.input is None:
            _write_new(project_root / documents / "example.md", _EXAMPLE_DOCUMENT)
        elif not (project_root / documents).is_dir():
            raise ConfigError(f"input directory {documents} does not exist",
                              fix="pass --input with a directory relative to the project", location=Location(key="--input"))
        attributes = {
            "input": {"path": documents, "formats": ["pdf", "docx", "html", "md"]},
            "features": {"source": source, "converted": converted},
            "docling": {"pipeline": "native"},
            "ray": {"workers": "auto", "batch_size": 8},
            "resources": {"nodes": 1, "cpus_per_task": 2, "mem": "4G", "time": "00:30:00"},
        }
        if params.cluster:
            attributes["cluster"] = params.cluster
        dg.scaffold_component(request, attributes)
