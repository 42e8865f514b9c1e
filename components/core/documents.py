"""The two Metaxy features a RayDoclingComponent declares: the source documents and their conversion.

Both the component and the project-wide feature scan (core.features) build them from the same
YAML attributes here, so a downstream MetaxyFeatureComponent can depend on either one.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

# What a source document carries, and what a conversion records per document.
SOURCE_COLUMNS = {"path": "str", "format": "str", "bytes": "int", "cost": "int"}
CONVERTED_COLUMNS = {"markdown_path": "str", "status": "str", "pages": "int", "chars": "int", "elapsed_s": "float", "error": "str"}
ID_COLUMNS = ["doc_id"]
SOURCE_FIELD, CONVERTED_FIELD = "content", "markdown"
# Docling settings that change the markdown; any change re-converts every document. Batch sizes,
# threads, devices and paths change speed, not output, and are left out.
OUTPUT_OPTIONS = {"pipeline": "native", "ocr": False, "table_structure": True}
# Options added later count only when set: a store converted before they existed stays up to date.
LATER_OUTPUT_OPTIONS = {"page_breaks": False}


def options_digest(docling: dict | None) -> str:
    chosen = {name: (docling or {}).get(name, default) for name, default in OUTPUT_OPTIONS.items()}
    chosen.update({name: value for name, default in LATER_OUTPUT_OPTIONS.items()
                   if (value := (docling or {}).get(name, default)) != default})
    return hashlib.sha256(json.dumps(chosen, sort_keys=True).encode()).hexdigest()[:8]


def declarations(attributes: dict[str, Any]) -> list[tuple[str, dict[str, Any], tuple[str, ...]]]:
    """(feature key, MetaxyFeature-style attributes, YAML path of the key) for source and conversion."""
    features = attributes.get("features") or {}
    source, converted = features.get("source"), features.get("converted")
    if not isinstance(source, str) or not isinstance(converted, str):
        return []
    shared = {k: attributes.get(k) for k in ("store", "cluster") if attributes.get(k) is not None}
    code_version = f"{attributes.get('code_version', '1')}-{options_digest(attributes.get('docling'))}"
    return [
        (source, {
            "feature": source,
            "description": f"Documents under {(attributes.get('input') or {}).get('path')}, one row per file",
            "id_columns": ID_COLUMNS,
            "columns": SOURCE_COLUMNS,
            "fields": [{"key": SOURCE_FIELD, "code_version": "1"}],
            **shared,
        }, ("features", "source")),
        (converted, {
            "feature": converted,
            "description": attributes.get("description") or "Markdown converted by Docling, one row per document",
            "id_columns": ID_COLUMNS,
            "columns": CONVERTED_COLUMNS,
            "deps": [{"feature": source, "select": ["path", "format", "cost"]}],
            "fields": [{"key": CONVERTED_FIELD, "code_version": code_version}],
            **shared,
        }, ("features", "converted")),
    ]
