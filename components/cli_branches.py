"""`hpc branch list | diff NAME | merge NAME | drop NAME`: the branches of the project's metadata stores.

Each command runs once per store the project's features use (most projects have one), where that
store is: in this process for a local profile, on the cluster's login node (in the job environment,
through the SSH session) for a Slurm profile. Branches are declared in branches.yaml and start with
their first run (HPC_BRANCH=NAME, or the run tag hpc/branch=NAME).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path

from components.core.branches import load_branches
from components.core.errors import ConfigError
from components.core.features import FeatureGraph, scan
from components.core.profiles import ClusterProfile, load_profile, resolve_cluster_name

DIFF_LINES = 60  # most lines of one file's diff shown by --files


@dataclass
class StoreGroup:
    """The features kept in one store, upstream first, and the profile that says where the store is."""

    profile: ClusterProfile
    store: dict
    specs: list[dict] = field(default_factory=list)


def store_groups(project_root: Path, branch=None) -> list[StoreGroup]:
    """The project's stores with the features each keeps: main's definitions, or `branch`'s (its
    `set` applied). Raises ConfigError."""
    from components.metaxy_feature import DEFS_DIR, _store_config

    decls = scan(project_root / DEFS_DIR, branch)
    graph = FeatureGraph({d.key: d for d in decls})
    groups: dict[str, StoreGroup] = {}
    for decl in decls:
        name = resolve_cluster_name(decl.attributes.get("cluster"), project_root)
        profile = load_profile(name, project_root / "clusters")
        store = _store_config(decl.attributes.get("store"), profile, project_root)
        if store.get("kind", "delta") not in ("delta", "duckdb"):
            continue  # branches live beside a delta or duckdb store only
        group = groups.setdefault(json.dumps([profile.name, store], sort_keys=True), StoreGroup(profile, store))
        for upstream in graph.lineage(decl.key):
            if all(s["key"] != upstream.key for s in group.specs):
                group.specs.append(upstream.spec())
    return list(groups.values())


def _run(group: StoreGroup, project_root: Path, step: str, request: dict) -> dict:
    """Run a branch step where the group's store is; its summary. Raises ConfigError for a refusal."""
    request = {"store": group.store, "specs": group.specs, "target": f"branch {request.get('branch')}", **request}
    if group.profile.scheduler != "slurm":
        from components.runtime.increment import FeatureDataError
        from components.runtime.steps import STEPS

        try:
            return STEPS[step](request)
        except FeatureDataError as exc:
            raise ConfigError(exc.problem, fix=exc.fix) from None
    return _run_remote(group, project_root, step, request)


def _run_remote(group: StoreGroup, project_root: Path, step: str, request: dict) -> dict:
    import dagster as dg
    import uuid

    from components.core import environments
    from components.core.feature_steps import RemoteSteps
    from components.core.imports import workload_imports
    from components.core.remote import expanded_base_dir
    from components.core.render import RUNTIME_DIR
    from components.core.ssh_target import target_for
    from components.core.transports import transport_for

    transport = transport_for(target_for(group.profile))
    try:
        base = expanded_base_dir(transport, group.profile)
        environments.prepare(group.profile, project_root, transport, base, workload_imports(RUNTIME_DIR / "branch_steps.py"))
        steps = RemoteSteps(transport, group.profile, project_root, base, f"{base}/branches/{uuid.uuid4().hex[:12]}")
        try:
            return steps.run(step, request)
        except dg.Failure as exc:
            raise ConfigError(str(exc.description)) from None
        finally:
            steps.cleanup()
    finally:
        transport.close()


def _on_branch(project_root: Path, name: str, step: str, extra: dict | None = None) -> list[dict]:
    """Run `step` on branch `name` in every store of the project that holds it; their summaries.

    Raises ConfigError when none does (naming the declared branches) or for the step's refusal.
    """
    summaries = []
    declared = load_branches(project_root).get(name)
    on_branch = {json.dumps([g.profile.name, g.store], sort_keys=True): g.specs
                 for g in store_groups(project_root, declared)} if declared else {}
    for group in store_groups(project_root):
        specs = {"branch_specs": on_branch.get(json.dumps([group.profile.name, group.store], sort_keys=True))} \
            if step == "branch-diff" and declared else {}
        summary = _run(group, project_root, step, {"branch": name, "missing_ok": True, **specs, **(extra or {})})
        if not summary.get("absent"):
            summaries.append(summary)
    if not summaries:
        branches = load_branches(project_root)
        if name not in branches:
            raise ConfigError(f"branch {name!r} is not declared in branches.yaml, and no store of this project holds it",
                              fix=f"declared branches: {', '.join(sorted(branches)) or 'none yet (see branches.yaml)'}")
        raise ConfigError(f"branch {name} has not run yet: no store of this project holds it",
                          fix=f"it starts with its first run: HPC_BRANCH={name} .venv/bin/dg launch --assets ...")
    return summaries


def cmd_list(args: argparse.Namespace, project_root: Path) -> int:
    declared = load_branches(project_root)
    seen = set()
    for group in store_groups(project_root):
        summary = _run(group, project_root, "branch-list", {})
        for branch in summary["branches"]:
            seen.add(branch["name"])
            state = f"merged {branch['merged_at']}" if branch["merged_at"] else (
                "merge cut short: run hpc branch merge again" if branch["merging"] else "open")
            rows = ", ".join(f"{k} {n}" for k, n in branch["rows"].items()) or "no rows yet"
            print(f"{branch['name']}  {state}, started {branch['started_at']}  ({summary['store']})")
            print(f"  subset: {branch['subset'] or 'every sample'}; rows: {rows}")
    for name in sorted(set(declared) - seen):
        print(f"{name}  not run yet (declared in branches.yaml)")
    if not declared and not seen:
        print("no branches: declare one in branches.yaml, then run with HPC_BRANCH=NAME")
    return 0


def _show_files(files: list[dict]) -> None:
    """Print the unified diffs the diff step made where the files are (--files)."""
    for pair in files:
        if "unreadable" in pair:
            print(f"    {pair['id']} ({pair['column']}): cannot compare: {pair['unreadable']}")
            continue
        if "diff" not in pair:
            print(f"    {pair['id']} ({pair['column']}): not compared (main {pair['main']}, branch {pair['branch']})")
            continue
        lines = pair["diff"]
        print(f"    {pair['id']} ({pair['column']}): " + ("identical" if not pair["diff_lines"] else f"{pair['diff_lines']} diff lines"))
        for line in lines[:DIFF_LINES]:
            print(f"      {line}")
        if pair["diff_lines"] > DIFF_LINES:
            print(f"      ... {pair['diff_lines'] - DIFF_LINES} more lines: diff {pair['main']} {pair['branch']}")


def cmd_diff(args: argparse.Namespace, project_root: Path) -> int:
    summaries = _on_branch(project_root, args.name, "branch-diff", {"files_diff": bool(args.files)})
    if args.json:
        print(json.dumps(summaries, indent=1))
        return 0
    for summary in summaries:
        print(f"branch {summary['branch']} (started {summary['started_at']}, subset {summary['subset'] or 'every sample'}) "
              f"against main in {summary['store']}:")
        for feature in summary["features"]:
            print(f"  {feature['feature']}: {feature['added']} added, {feature['changed']} changed, "
                  f"{feature['same']} as in main")
            if feature["added_examples"]:
                print(f"    added: {', '.join(feature['added_examples'])}")
            if feature["changed_examples"]:
                print(f"    changed: {', '.join(feature['changed_examples'])}")
            for name, n in feature["fields"].items():
                print(f"    field {name}: provenance differs for {n} sample(s)")
            for name, versions in feature.get("field_versions", {}).items():
                print(f"    field {name} version: main {versions['main']} -> branch {versions['branch']}")
            versions = feature["feature_version"]
            if versions["branch"] and versions["branch"] != versions["main"]:
                print(f"    feature version of its rows: main {', '.join(versions['main']) or '-'} -> branch {', '.join(versions['branch'])}")
            if args.files:
                _show_files(feature["files"])
    return 0


def cmd_merge(args: argparse.Namespace, project_root: Path) -> int:
    # Every store is checked before any is written: a refusal in one leaves all of them as they are.
    _on_branch(project_root, args.name, "branch-merge", {"check_only": True})
    for summary in _on_branch(project_root, args.name, "branch-merge"):
        merged = ", ".join(f"{k} {n}" for k, n in summary["merged"].items()) or "nothing (every row is as in main)"
        print(f"merged branch {args.name} into main in {summary['store']}: {merged} sample(s); "
              f"{summary['files_moved']} file(s) moved, {summary['files_removed']} removed")
    print(f"the branch is kept, marked merged: hpc branch drop {args.name} removes it")
    return 0


def cmd_drop(args: argparse.Namespace, project_root: Path) -> int:
    for summary in _on_branch(project_root, args.name, "branch-drop"):
        print(f"dropped branch {args.name} of {summary['store']}: removed {', '.join(summary['removed']) or 'its record'}")
    return 0


def add_parsers(sub) -> None:
    branch = sub.add_parser("branch", help="experiments on a subset in a store beside main's: list, diff, merge, drop")
    commands = branch.add_subparsers(dest="branch_command", required=True)
    listing = commands.add_parser("list", help="the declared branches and those that ran, per store")
    listing.set_defaults(func=cmd_list)
    diff = commands.add_parser("diff", help="per feature: samples the branch adds or changes against main, and the fields")
    diff.add_argument("name")
    diff.add_argument("--files", action="store_true", help="also show a unified diff of the files the rows name (markdown)")
    diff.add_argument("--json", action="store_true", help="print the summaries as JSON")
    diff.set_defaults(func=cmd_diff)
    merge = commands.add_parser("merge", help="write the branch's rows and files into main (refused if main changed them since)")
    merge.add_argument("name")
    merge.set_defaults(func=cmd_merge)
    drop = commands.add_parser("drop", help="remove the branch's store, files and record; main is not touched")
    drop.add_argument("name")
    drop.set_defaults(func=cmd_drop)
