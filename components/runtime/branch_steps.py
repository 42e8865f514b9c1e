"""`hpc branch list | diff | merge | drop` as steps that run where the store is.

A request names the main store (`store`), the features kept in it, upstream first (`specs`, as
main's definitions declare them) and, but for list, the branch (`branch`). Each returns a JSON-able
summary; a refusal raises BranchError with the samples it is about.

Merge is checked whole before anything is written: a sample main changed or deleted after the
branch started, and after the branch last computed it, is a conflict, and so is a feature the branch computed under definitions main does not have (main's
next run would compute those samples again). Then, from upstream down, each feature's added and
changed rows are written to main in one commit each, the branch's files move beside main's, and
the record says merged. A merge cut short is finished by running it again: rows already in main
compare as the same and are not written twice; staged files are moved from the record's journal.
"""

from __future__ import annotations

import difflib
import glob
import os
import shutil

import polars as pl

from .branches import (
    BranchError, FEATURE_VERSION, PROVENANCE_BY_FIELD, SHOWN, UPDATED_AT, _now, _write_record, beside, branch_store,
    branches_dir, check_name, compare, latest, open_branch, read_record, remove_path,
)
from .graph import build_graph
from .stores import configure, describe, expand, open_store


class _Branch:
    """One request's branch: its record, main's graph and the three stores."""

    def __init__(self, request: dict):
        self.request = request
        self.store = request["store"]
        self.name = check_name(request["branch"])
        self.record = read_record(self.store, self.name)
        if self.record is None:
            raise BranchError(f"there is no branch {self.name} in {describe(self.store)}",
                              "list the branches with `hpc branch list`; a branch starts with its first run (HPC_BRANCH=NAME)")
        self.specs = request["specs"]
        configure()  # before Metaxy builds the graph, which warns without a global configuration
        self.graph, self.classes = build_graph(self.specs)

    def features(self, branch_only) -> list[dict]:
        """The specs of the features the branch holds rows of, upstream first."""
        return [s for s in self.specs if branch_only.has_feature(self.classes[s["key"]])]

    def compared(self, branch_only, main, spec: dict) -> pl.DataFrame:
        cls, ids = self.classes[spec["key"]], list(spec["id_columns"])
        mine = latest(branch_only, cls, ids)
        with main.open("r"):
            theirs = latest(main, cls, ids, mine.select(ids), deleted=True) if mine.height else pl.DataFrame()
        return compare(mine, theirs, ids).sort(ids) if mine.height else mine


def merge_in_flight(store: dict) -> None:
    """Refuse to run on a store whose merge from a branch was cut short: its rows are in main, but
    some of its files may not be yet. Raises BranchError naming the branch and the command that finishes it."""
    try:
        folder = expand(branches_dir(store))
    except BranchError:
        return  # a store kind without branches
    for path in sorted(glob.glob(f"{folder}/*.json")):
        record = read_record(store, os.path.basename(path)[: -len(".json")]) or {}
        if record.get("merging"):
            raise BranchError(
                f"the merge of branch {record['name']} into {describe(store)} was cut short: main holds its rows, "
                f"but {len(record['merging'].get('moves', []))} file(s) may not be in place yet",
                f"finish it first: hpc branch merge {record['name']}",
            )


def _absent(request: dict) -> dict | None:
    """With `missing_ok` (a store asked only in case it holds the branch): the answer when it does not."""
    if request.get("missing_ok") and read_record(request["store"], check_name(request["branch"])) is None:
        return {"store": describe(request["store"]), "branch": request["branch"], "absent": True}
    return None


def _ids(frame: pl.DataFrame, id_columns: list[str], limit: int = SHOWN) -> list[str]:
    rows = frame.select(id_columns).head(limit).rows()
    return [str(r[0]) if len(r) == 1 else str(tuple(r)) for r in rows]


def list_branches(request: dict) -> dict:
    """Every branch of the store: name, start, merge time, subset, rows per feature."""
    store = request["store"]
    out = []
    configure()
    graph, classes = build_graph(request["specs"])
    for path in sorted(glob.glob(expand(f"{branches_dir(store)}/*.json"))):
        name = os.path.basename(path)[: -len(".json")]
        record = read_record(store, name) or {}
        rows: dict[str, int] = {}
        location = branch_store(store, name)
        if os.path.exists(expand(location["path"])):  # opening a Delta store that is not there would create it
            with graph.use():
                branch_only = open_store(location)
                with branch_only.open("r"):
                    for spec in request["specs"]:
                        if branch_only.has_feature(classes[spec["key"]]):
                            rows[spec["key"]] = latest(branch_only, classes[spec["key"]], spec["id_columns"]).height
        out.append({"name": name, "started_at": record.get("started_at"), "merged_at": record.get("merged_at"),
                    "merging": bool(record.get("merging")), "subset": record.get("subset"), "rows": rows})
    return {"store": describe(store), "branches": out}


def diff(request: dict) -> dict:
    """Per feature: samples the branch adds or changes against main, the fields whose provenance
    differs (samples per field), feature versions (main's, the branch's) and, for file columns, the
    paths of both files of up to 10 samples."""
    if (absent := _absent(request)) is not None:
        return absent
    branch = _Branch(request)
    features = []
    field_versions = _field_versions(branch, request.get("branch_specs"))
    with branch.graph.use():
        branch_only, main = open_branch(branch.store, branch.name)
        with branch_only.open("r"):
            for spec in branch.features(branch_only):
                rows = branch.compared(branch_only, main, spec)
                ids = list(spec["id_columns"])
                differ = rows.filter(pl.col("_change") != "same")
                fields = {}
                changed = rows.filter(pl.col("_change") == "changed")
                for field in [f["key"] for f in spec["fields"]]:
                    n = changed.filter(pl.col(PROVENANCE_BY_FIELD).struct.field(field)
                                       .ne_missing(pl.col("_main_by_field").struct.field(field))).height
                    if n:
                        fields[field] = n
                versions = sorted({v for v in differ[FEATURE_VERSION].to_list()}) if differ.height else []
                main_versions = sorted({v for v in changed["_main_feature_version"].to_list() if v}) if changed.height else []
                files = []
                for column, main_dir in (branch.record["features"].get(spec["key"], {}).get("files") or {}).items():
                    for row in differ.head(SHOWN).iter_rows(named=True):
                        pair = {"id": _ids(pl.DataFrame([{c: row[c] for c in ids}]), ids)[0], "column": column,
                                "branch": row[column], "main": _main_path(row[column], main_dir, branch.name)}
                        if request.get("files_diff"):  # here, where the files are (the login node for a cluster's store)
                            pair.update(_file_diff(pair))
                        files.append(pair)
                features.append({
                    "feature": spec["key"], "rows": rows.height,
                    "added": int((rows["_change"] == "added").sum()), "changed": changed.height,
                    "same": int((rows["_change"] == "same").sum()),
                    "added_examples": _ids(rows.filter(pl.col("_change") == "added"), ids),
                    "changed_examples": _ids(changed, ids),
                    "fields": fields, "feature_version": {"main": main_versions, "branch": versions}, "files": files,
                    "field_versions": field_versions.get(spec["key"], {}),
                })
    return {"store": describe(branch.store), "branch": branch.name, "started_at": branch.record["started_at"],
            "subset": branch.record.get("subset"), "features": features}


def _field_versions(branch: _Branch, branch_specs: list[dict] | None) -> dict[str, dict[str, dict[str, str]]]:
    """{feature: {field: {"main": version, "branch": version}}} for the fields whose Metaxy field
    version differs between main's definitions and the branch's (`branch_specs`, its `set` applied)."""
    if not branch_specs:
        return {}
    other, _ = build_graph(branch_specs)
    out: dict[str, dict[str, dict[str, str]]] = {}
    for spec in branch.specs:
        if not any(s["key"] == spec["key"] for s in branch_specs):
            continue
        mine = branch.graph.get_feature_version_by_field(spec["key"])
        theirs = other.get_feature_version_by_field(spec["key"])
        differ = {field: {"main": mine[field], "branch": theirs.get(field)} for field in mine if theirs.get(field) != mine[field]}
        if differ:
            out[spec["key"]] = differ
    return out


FILE_DIFF_LINES = 200  # most lines of one file's unified diff a diff step returns


def _file_diff(pair: dict) -> dict:
    """{"diff": unified diff lines (main -> branch, at most FILE_DIFF_LINES), "diff_lines": their number}
    or {"unreadable": why}. A file that does not exist (a failed conversion) compares as empty."""
    texts = []
    for side in ("main", "branch"):
        path = pair[side]
        try:
            texts.append(open(path, encoding="utf-8").read().splitlines() if path and os.path.exists(path) else [])
        except (OSError, UnicodeDecodeError) as exc:
            return {"unreadable": f"{side} file {path}: {exc}"}
    lines = list(difflib.unified_diff(texts[0], texts[1], f"main/{pair['id']}", f"branch/{pair['id']}", lineterm="", n=1))
    return {"diff": lines[:FILE_DIFF_LINES], "diff_lines": len(lines)}


def _main_path(value: str | None, main_dir: str, name: str) -> str | None:
    """Where a file of the branch lands in main: the same name under main's directory."""
    if not value:
        return None
    root = expand(beside(main_dir, name)).rstrip("/") + "/"
    if not value.startswith(root):
        return value  # not the branch's own file
    return os.path.join(expand(main_dir), value[len(root):])


def _conflicts(rows: pl.DataFrame, started: str) -> pl.DataFrame:
    """Rows main wrote or deleted after the branch started and after the branch computed them: the
    branch's row would undo a change it never saw. (A sample the branch computed again since main's
    change was computed from main as it is now: no conflict.)"""
    if rows.is_empty() or rows["_main_changed_at"].dtype == pl.Null:
        return rows.clear()
    import datetime

    start = datetime.datetime.fromisoformat(started)
    seen = pl.max_horizontal(pl.lit(start), pl.col(UPDATED_AT))
    return rows.filter(pl.col("_main_changed_at").is_not_null() & (pl.col("_main_changed_at") > seen))


def merge(request: dict) -> dict:
    """Write the branch's added and changed rows into main; BranchError (nothing written) on a conflict
    or on definitions main lacks. Returns the samples merged per feature and the files moved."""
    if (absent := _absent(request)) is not None:
        return absent
    branch = _Branch(request)
    record = branch.record
    if record.get("merged_at") and not record.get("merging"):
        raise BranchError(f"branch {branch.name} was already merged at {record['merged_at']}",
                          f"drop it (hpc branch drop {branch.name}); a new experiment needs a new branch")
    plan: list[tuple[dict, pl.DataFrame]] = []
    conflicts, definitions = [], []
    with branch.graph.use():
        branch_only, main = open_branch(branch.store, branch.name)
        with branch_only.open("r"):
            for spec in branch.features(branch_only):
                rows = branch.compared(branch_only, main, spec).filter(pl.col("_change") != "same")
                if rows.is_empty():
                    continue
                ids = list(spec["id_columns"])
                clash = _conflicts(rows, record["started_at"])
                if clash.height:
                    conflicts.append(f"{spec['key']}: {clash.height} sample(s): {', '.join(_ids(clash, ids))}"
                                     + (f" (and {clash.height - SHOWN} more)" if clash.height > SHOWN else ""))
                wanted = branch.graph.get_feature_version(spec["key"])
                other = sorted({v for v in rows[FEATURE_VERSION].to_list() if v != wanted})
                if other:
                    definitions.append(spec["key"])
                plan.append((spec, rows))
    if conflicts:
        raise BranchError(
            f"main changed or deleted samples after branch {branch.name} started ({record['started_at']}) and after the "
            "branch computed them; nothing was merged:\n    " + "\n    ".join(conflicts),
            f"run the branch again (HPC_BRANCH={branch.name}): it recomputes what main's change touched from main as it is "
            f"now; or start over from main: hpc branch drop {branch.name}, then run the branch again",
        )
    if definitions:
        raise BranchError(
            f"branch {branch.name} computed {', '.join(definitions)} under definitions main does not have "
            f"(its set: {record.get('set') or {}}); merged now, main's next run would compute those samples again. "
            "Nothing was merged",
            "give main the branch's definitions first (copy the branch's `set:` from branches.yaml into the defs.yaml "
            "of those features), then merge again",
        )
    if request.get("check_only"):
        return {"store": describe(branch.store), "branch": branch.name, "checked": {s["key"]: r.height for s, r in plan}}
    return _write(branch, plan)


def _stage_files(branch: _Branch, spec: dict, rows: pl.DataFrame) -> tuple[pl.DataFrame, list, list]:
    """Copy the branch's files beside their main targets (as .tmp) and point the rows at the targets."""
    moves, removes = [], []
    for column, main_dir in (branch.record["features"].get(spec["key"], {}).get("files") or {}).items():
        targets = []
        for value in rows[column].to_list():
            target = _main_path(value, main_dir, branch.name)
            if target and target != value:
                if os.path.exists(value):
                    staged = f"{target}.merge-{branch.name}.tmp"
                    os.makedirs(os.path.dirname(target), exist_ok=True)
                    shutil.copyfile(value, staged)
                    shutil.copymode(target if os.path.exists(target) else value, staged)  # as private as main's file
                    moves.append([staged, target])
                else:  # the branch has no file (failed): main's older one would no longer be true
                    removes.append(target)
            targets.append(target)
        rows = rows.with_columns(pl.Series(column, targets, dtype=pl.String))
    return rows, moves, removes


def _write(branch: _Branch, plan: list[tuple[dict, pl.DataFrame]]) -> dict:
    record = dict(branch.record)
    journal = record.get("merging") or {"moves": [], "removes": []}
    staged = []
    for spec, rows in plan:
        rows, moves, removes = _stage_files(branch, spec, rows)
        journal["moves"] += moves
        journal["removes"] += removes
        staged.append((spec, rows))
    record["merging"] = journal
    _write_record(branch.store, record)
    merged: dict[str, int] = {}
    with branch.graph.use():
        main = open_store(branch.store)
        with main.open("w"):
            for spec, rows in staged:  # upstream first: a cut short merge leaves main's downstream stale, not wrong
                keep = [c for c in rows.columns if not c.startswith("_") and c != UPDATED_AT]
                main.write(branch.classes[spec["key"]], rows.select(keep), preserve_feature_version=True,
                           materialization_id=f"merge:{branch.name}")
                merged[spec["key"]] = rows.height
    moved = 0
    try:
        for staged_file, target in journal["moves"]:
            if os.path.exists(staged_file):
                os.replace(staged_file, target)
                moved += 1
        for target in journal["removes"]:
            if os.path.exists(target):
                os.unlink(target)
    except OSError as exc:
        raise BranchError(
            f"the merge of branch {branch.name} wrote main's rows ({', '.join(f'{k} {n}' for k, n in merged.items()) or 'none'}) "
            f"but could not put a file in place: {exc}. Main's runs wait until the merge is finished",
            f"remove the cause, then run the merge again to finish it: hpc branch merge {branch.name}",
        ) from None
    record.pop("merging")
    record["merged_at"] = _now().isoformat()
    record["merged"] = merged
    _write_record(branch.store, record)
    return {"store": describe(branch.store), "branch": branch.name, "merged": merged, "files_moved": moved,
            "files_removed": len(journal["removes"])}


def drop(request: dict) -> dict:
    """Remove the branch's store, its files and its record; main is not touched."""
    if (absent := _absent(request)) is not None:
        return absent
    store, name = request["store"], check_name(request["branch"])
    record = read_record(store, name)
    if record is None:
        raise BranchError(f"there is no branch {name} in {describe(store)}", "list the branches with `hpc branch list`")
    if record.get("merging"):
        raise BranchError(f"the merge of branch {name} was cut short: dropping it now would lose its staged files",
                          f"finish the merge first: hpc branch merge {name}")
    removed = []
    for feature in record.get("features", {}).values():
        for main_dir in (feature.get("files") or {}).values():
            if remove_path(beside(main_dir, name)):
                removed.append(beside(main_dir, name))
    location = branch_store(store, name)["path"]
    if remove_path(location):
        removed.append(location)
    remove_path(f"{branches_dir(store)}/{name}.features")
    os.unlink(expand(f"{branches_dir(store)}/{name}.json"))
    for folder in {expand(branches_dir(store)), *(expand(beside(d, name)).rsplit("/", 1)[0] for f in record.get("features", {}).values()
                                                   for d in (f.get("files") or {}).values())}:
        try:
            os.rmdir(folder)  # the .branches folder, once its last branch is gone
        except OSError:
            pass
    return {"store": describe(store), "branch": name, "removed": removed}


STEPS = {"branch-list": list_branches, "branch-diff": diff, "branch-merge": merge, "branch-drop": drop}
