"""`hpc`: preview job scripts and check cluster profiles without connecting anywhere.

    hpc render defs/numbers --cluster leonardo     # the exact script raw/numbers would submit
    hpc render defs/numbers --all-clusters         # ... on every profile in clusters/
    hpc clusters                                   # list profiles, validating each
    hpc doctor leonardo [--json] [--submit]        # preflight: connect and check the site for real
    hpc login vsc5 | --status | hpc logout vsc5    # the SSH session every step, run and schedule uses
    hpc branch list | diff NAME | merge NAME | drop NAME   # experiments on a subset, beside main's store
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from components.cli_errors import user_message
from components.core.env_file import applied
from components.core.errors import ConfigError
from components.core.profile_merge import profile_choices
from components.core.profiles import available_profiles, load_profile
from components.core.project import load_settings
from components.inventory import find_project_root, load_workload, workload_defs_file

EXIT_CONFIG = 2


def cmd_render(args: argparse.Namespace, project_root: Path) -> int:
    from components.core.render import render_script
    from components.workload import _placed

    clusters_dir = project_root / "clusters"
    for name in args.cluster or ():
        _check_profile_name(name, clusters_dir, "--cluster")
    component = load_workload(project_root, args.path)
    defs_file = workload_defs_file(project_root, args.path)
    clusters = available_profiles(clusters_dir) if args.all_clusters else (args.cluster or [None])
    for index, cluster in enumerate(clusters):
        try:  # ConfigError and the core's value errors: point at the asset's defs.yaml
            plan = component.render(project_root, cluster, strict=args.strict)
            plan, allocation_script = component.render_in_allocation(project_root, plan, strict=args.strict)
        except ValueError as exc:
            raise _placed(exc, defs_file) from None
        if len(clusters) > 1:
            print(("\n" if index else "") + f"# ===== {plan.profile.name} =====")
        sys.stdout.write(render_script(plan, clusters_dir))
        if allocation_script is not None:
            print("\n# ===== the run's allocation (submission.allocation: run): allocation.sh =====")
            sys.stdout.write(allocation_script)
        for warning in plan.warnings:
            print(f"warning: {warning}", file=sys.stderr)
    return 0


def cmd_clusters(args: argparse.Namespace, project_root: Path) -> int:
    from components.core.profile_files import missing_files

    clusters_dir = project_root / "clusters"
    status = 0
    for name in available_profiles(clusters_dir):
        try:
            profile = load_profile(name, clusters_dir)
        except ConfigError as exc:
            print(f"{name:10} INVALID\n  {_indented(exc)}", file=sys.stderr)
            status = EXIT_CONFIG
            continue
        classes = ", ".join(profile.slurm.partitions) if profile.slurm else "-"
        print(f"{name:10} {profile.scheduler:6} {profile.description}  [classes: {classes}]")
        # Files on this machine that a connection needs: missing is not invalid (nobody connects yet).
        for problem in missing_files(profile):
            print(f"  warning: {_indented(problem)}", file=sys.stderr)
    return status


def cmd_doctor(args: argparse.Namespace, project_root: Path) -> int:
    from components.core import doctor
    from components.core.doctor_env import job_environment_check
    from components.core.doctor_report import exit_code, render_json, render_text
    from components.inventory import job_environments

    _check_profile_name(args.cluster, project_root / "clusters", "hpc doctor")
    checks = doctor.including(job_environment_check(job_environments))
    results = doctor.diagnose(args.cluster, project_root, submit=args.submit, checks=checks)
    sys.stdout.write(render_json(results) if args.json else render_text(results))
    return exit_code(results)


def _check_profile_name(name: str, clusters_dir: Path, given_as: str) -> None:
    """A profile named on the command line exists; else the closest match and every profile."""
    if not (clusters_dir / f"{name}.yaml").is_file():
        raise ConfigError(f"unknown cluster {name!r} given to {given_as}: there is no clusters/{name}.yaml",
                          fix=f"{profile_choices(name, clusters_dir)}; or add clusters/{name}.yaml (see clusters/README.md)")


def _indented(error: ConfigError) -> str:
    return str(error).replace("\n", "\n  ")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hpc", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    render = sub.add_parser("render", help="print the job script a SlurmAssetComponent would run")
    render.add_argument("path", help="component folder under defs/, e.g. defs/numbers")
    render.add_argument("--cluster", action="append", help="profile name (repeatable); default: $HPC_CLUSTER, else [tool.hpc] cluster, else local")
    render.add_argument("--all-clusters", action="store_true", help="render for every profile in clusters/")
    render.add_argument("--strict", action="store_true", help="fail where submission would (e.g. missing account)")
    render.set_defaults(func=cmd_render)
    clusters = sub.add_parser("clusters", help="list and validate the cluster profiles")
    clusters.set_defaults(func=cmd_clusters)
    doctor = sub.add_parser("doctor", help="check a cluster profile against the real cluster, one line per check")
    doctor.add_argument("cluster", help="profile name, e.g. leonardo")
    doctor.add_argument("--json", action="store_true", help="print a JSON list of {check, ok, detail, fix} (ok is null when skipped)")
    doctor.add_argument("--submit", action="store_true", help="also run a 1-minute no-op job per partition class and report the queue wait")
    doctor.set_defaults(func=cmd_doctor)
    from components.cli_branches import add_parsers as add_branch_parsers
    from components.cli_sessions import add_parsers

    add_parsers(sub)
    add_branch_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one `hpc` command; 2 with one message on stderr for a mistake the user can fix (components.cli_errors)."""
    args = build_parser().parse_args(argv)
    try:
        project_root = find_project_root(Path.cwd())
        # pyproject.toml before anything else reads it: dagster would stop on a syntax error with a traceback.
        load_settings(project_root)
        with applied(project_root):  # .env, as dg reads it
            return args.func(args, project_root)
    except BrokenPipeError:
        # `hpc ... | head` closed the pipe: what was asked for has been read. Silence the flush at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:
        text = user_message(exc)
        if text is None:
            raise  # an internal error: its traceback is what a bug report needs
        print(f"error: {text}", file=sys.stderr)
        return EXIT_CONFIG


if __name__ == "__main__":
    sys.exit(main())
