"""`hpc`: preview job scripts and check cluster profiles without connecting anywhere.

    hpc render defs/numbers --cluster leonardo     # the exact script raw/numbers would submit
    hpc render defs/numbers --all-clusters         # ... on every profile in clusters/
    hpc clusters                                   # list profiles, validating each
    hpc doctor leonardo [--json] [--submit]        # preflight: connect and check the site for real
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from components.core.errors import ConfigError
from components.inventory import find_project_root, load_workload
from components.core.profiles import available_profiles, load_profile

EXIT_CONFIG = 2


def cmd_render(args: argparse.Namespace) -> int:
    project_root = find_project_root(Path.cwd())
    component = load_workload(project_root, args.path)
    clusters = available_profiles(project_root / "clusters") if args.all_clusters else (args.cluster or [None])
    for index, cluster in enumerate(clusters):
        plan = component.render(project_root, cluster, strict=args.strict)
        from components.core.render import render_script

        if len(clusters) > 1:
            print(("\n" if index else "") + f"# ===== {plan.profile.name} =====")
        sys.stdout.write(render_script(plan, project_root / "clusters"))
        for warning in plan.warnings:
            print(f"warning: {warning}", file=sys.stderr)
    return 0


def cmd_clusters(args: argparse.Namespace) -> int:
    project_root = find_project_root(Path.cwd())
    clusters_dir = project_root / "clusters"
    status = 0
    for name in available_profiles(clusters_dir):
        try:
            profile = load_profile(name, clusters_dir)
        except ConfigError as exc:
            print(f"{name:10} INVALID\n  {exc}", file=sys.stderr)
            status = EXIT_CONFIG
            continue
        classes = ", ".join(profile.slurm.partitions) if profile.slurm else "-"
        print(f"{name:10} {profile.scheduler:6} {profile.description}  [classes: {classes}]")
    return status


def cmd_doctor(args: argparse.Namespace) -> int:
    from components.core import doctor
    from components.core.doctor_report import exit_code, render_json, render_text

    project_root = find_project_root(Path.cwd())
    from components.core.doctor_env import job_environment_check
    from components.inventory import job_environments

    checks = doctor.including(job_environment_check(job_environments))
    results = doctor.diagnose(args.cluster, project_root, submit=args.submit, checks=checks)
    sys.stdout.write(render_json(results) if args.json else render_text(results))
    return exit_code(results)


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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except Exception as exc:  # dagster's own load errors: show the message, not a traceback
        if type(exc).__module__.startswith(("dagster", "pydantic")):
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_CONFIG
        raise


if __name__ == "__main__":
    sys.exit(main())
