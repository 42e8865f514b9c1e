"""What a workload reported through Pipes, held against what its defs.yaml declares.

Dagster fails the step on a check nobody declared with "Received unexpected AssetCheckResult",
after the materialization was already recorded, and without saying which file to edit. Here the
workload's results are checked before any of them is yielded: a check the definition does not
declare fails the step naming the check and the defs.yaml to add it to, and nothing is recorded.
(Our multi-assets are not subsettable, so every declared check is selected in every run.)
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from pathlib import Path

import dagster as dg

from components.core.errors import ConfigError, Location
from components.core.graph_check import asset_source
from components.core.yamlio import load_yaml


def declared_results(context: dg.AssetExecutionContext, results: Sequence, workload: str) -> list:
    """The workload's results (MaterializeResult, AssetCheckResult) that this step may record.

    workload: how to name the workload in messages (workloads/draw_numbers.py).
    Raises dg.Failure when any result names a check the definition does not declare. (An undeclared
    asset key never gets here: dagster-pipes refuses it in the workload, naming the declared keys.)
    """
    assets_def = context.assets_def
    keys = set(assets_def.keys)
    checks = set(assets_def.check_keys)
    only = next(iter(keys)) if len(keys) == 1 else None
    problems: list[str] = []
    kept = []
    for result in results:
        key = getattr(result, "asset_key", None) or only
        if isinstance(result, dg.AssetCheckResult):
            check = dg.AssetCheckKey(key, result.check_name) if key is not None else None
            if check is None or check not in checks:
                problems.append(_undeclared_check(assets_def, key, result.check_name, workload))
                continue
        kept.append(result)
    if problems:
        raise dg.Failure(description="\n".join(problems) + "\nNothing was recorded for this step.")
    return kept


def _undeclared_check(assets_def: dg.AssetsDefinition, key: dg.AssetKey | None, name: str, workload: str) -> str:
    target = key or next(iter(assets_def.keys))
    where = _defs_file(assets_def, target)
    asset = f"on {key.to_user_string()}" if key is not None else "without naming an asset (this step has several)"
    declared = sorted(check.name for check in assets_def.check_keys if check.asset_key == target)
    close = difflib.get_close_matches(name, declared, n=1)
    return (f"{workload} reported check {name!r} {asset}, which {where} does not declare"
            + (f" (it declares: {', '.join(declared)})" if declared else "") + "\n"
            + (f"  did you mean {close[0]!r}?\n" if close else "")
            + f"  fix: add it to {where} under attributes:\n"
            f"    checks:\n      - asset: {target.to_user_string()}\n        name: {name}\n"
            f"  or correct the check_name the workload passes to report_asset_check")


def _defs_file(assets_def: dg.AssetsDefinition, key: dg.AssetKey) -> str:
    spec = next((s for s in assets_def.specs if s.key == key), None)
    file, line = asset_source(spec) if spec is not None else (None, None)
    if file is None:
        return "the asset's definition"
    try:
        line = load_yaml(Path(file))[1].line_of(("attributes", "checks")) or line
    except ConfigError:
        pass  # several documents in one file: the component's own line
    return str(Location(file=Path(file), line=line))
