"""Open the metadata store a feature declares. Paths may use $VARS: they expand where the store is.

Kinds:
  delta       Delta Lake tables under `path` (local disk, shared filesystem, or s3://... with options)
  duckdb      one DuckDB file at `path` (one writer process at a time)
  postgres    a PostgreSQL database; the connection string comes from the variable `url_env`
  clickhouse  a ClickHouse database; the connection string comes from the variable `url_env`
  custom      any metaxy MetadataStore class by import path (`class`), with `options` as arguments
"""

from __future__ import annotations

import importlib
import os
from typing import Any

import metaxy as mx

_CONFIGURED = False


def configure() -> None:
    # Metaxy warns on every call unless a global config exists; stores are configured per feature here.
    # Tables are created on first write, as an embedded store is expected to do.
    global _CONFIGURED
    if not _CONFIGURED:
        mx.MetaxyConfig.set(mx.MetaxyConfig(project="hpc", auto_create_tables=True))
        _CONFIGURED = True


def expand(path: str) -> str:
    return os.path.expanduser(os.path.expandvars(path))


def _secret(config: dict, what: str) -> str:
    name = config.get("url_env")
    if not name:
        raise ValueError(f"a {config['kind']} store needs url_env: the variable that holds the {what}")
    value = os.environ.get(name)
    if not value:
        raise ValueError(f"${name} is not set: export the {what} of the {config['kind']} store (it is never written to files)")
    return value


def _offline_duckdb(path: str, **options: Any):
    from metaxy.ext.duckdb import DuckDBMetadataStore
    from metaxy._hashing import HashAlgorithm

    class OfflineDuckDB(DuckDBMetadataStore):
        """Metaxy always adds the community `hashfuncs` extension, which DuckDB downloads on open.

        MD5 is built into DuckDB, so drop the extension and hash with MD5: it then works offline and
        on compute nodes without internet.
        """

        def __init__(self, *args: Any, **kwargs: Any):
            kwargs.setdefault("hash_algorithm", HashAlgorithm.MD5)
            super().__init__(*args, **kwargs)
            self.extensions = [e for e in self.extensions if e.name != "hashfuncs"]

    return OfflineDuckDB(database=path, **options)


def _make_folder(folder: str, config: dict) -> None:
    """Create a local store's folder now, so that a path that cannot be one fails with its reason, not deep in
    the store's library. Raises FeatureDataError (nothing is written to the store)."""
    if "://" in folder:
        return  # object storage: the store's own client creates what it needs
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        # Imported here: increment imports this module, and the error type is the steps' one.
        from .increment import FeatureDataError

        blocker = _file_in_the_way(folder)
        reason = f"{blocker} is a file, not a folder" if blocker else (exc.strerror or str(exc))
        raise FeatureDataError(
            f"the {config.get('kind', 'delta')} store path {config['path']} cannot be created here: {reason}",
            "set store.path in the feature's defs.yaml (or paths.data_dir of the cluster profile, for the default "
            "store) to a folder you can write, or fix the permissions of the folders above it",
        ) from None


def _file_in_the_way(folder: str) -> str | None:
    """The first part of `folder` that exists and is not a folder; None when there is none."""
    path = os.path.abspath(folder)
    parts = [path]
    while os.path.dirname(parts[-1]) != parts[-1]:
        parts.append(os.path.dirname(parts[-1]))
    return next((p for p in reversed(parts) if os.path.exists(p) and not os.path.isdir(p)), None)


def open_store(config: dict, fallback: list | None = None) -> mx.MetadataStore:
    """The store `config` describes; `fallback`: Metaxy fallback stores, read where this one lacks a feature."""
    configure()
    kind = config.get("kind", "delta")
    options = dict(config.get("options") or {})
    if fallback:
        options["fallback_stores"] = fallback
    if kind == "delta":
        from metaxy.ext.polars.handlers.delta import DeltaMetadataStore

        root = expand(config["path"])
        _make_folder(root, config)
        return DeltaMetadataStore(root_path=root, **options)
    if kind == "duckdb":
        path = expand(config["path"])
        _make_folder(os.path.dirname(path) or ".", config)
        return _offline_duckdb(path, **options)
    if kind == "postgres":
        from metaxy.ext.postgresql import PostgreSQLMetadataStore  # type: ignore[import-not-found]

        return PostgreSQLMetadataStore(connection_string=_secret(config, "connection string"), **options)
    if kind == "clickhouse":
        from metaxy.ext.clickhouse import ClickHouseMetadataStore  # type: ignore[import-not-found]

        return ClickHouseMetadataStore(connection_string=_secret(config, "connection string"), **options)
    if kind == "custom":
        module, _, name = config["class"].rpartition(".")
        cls = getattr(importlib.import_module(module), name)
        return cls(**options)
    raise ValueError(f"unknown store kind {kind!r}")


def describe(config: dict) -> str:
    kind = config.get("kind", "delta")
    if kind in ("delta", "duckdb"):
        return f"{kind}:{config['path']}"
    if kind == "custom":
        return f"custom:{config['class']}"
    return f"{kind}:${config.get('url_env')}"
