"""`hpc doctor` checks of the Slurm side: the account, each partition class, and (--submit) a test job per class.

What Slurm says is read once per run (`slurm_facts`) and parsed in `doctor_slurm_facts`, so that the
judgement of a partition class (`assess_class`) can be tested on any site's output.
"""

from __future__ import annotations

import shlex
import time
from typing import TYPE_CHECKING

from components.core.doctor_report import CheckResult, duration, failed, one_line, passed, skipped
from components.core.doctor_slurm_facts import (
    FACTS_COMMAND, PartitionInfo, QosInfo, SlurmFacts, gpus_per_node, parse_facts, parse_sacct_jobs, queue_wait_s,
)
from components.core.profiles import ClusterProfile, PartitionClass
from components.core.scheduler import ACTIVE, SlurmClient, parse_job_id
from components.core.units import parse_time_s

if TYPE_CHECKING:
    from components.core.doctor import Context


def slurm_facts(ctx: Context) -> SlurmFacts:
    if "slurm" not in ctx.facts:
        ctx.facts["slurm"] = parse_facts(ctx.run(FACTS_COMMAND, timeout=150).stdout)
    return ctx.facts["slurm"]


# --- account and partition classes ------------------------------------------------------------

def check_account(ctx: Context) -> list[CheckResult]:
    profile = ctx.profile
    assert profile is not None and profile.slurm is not None and ctx.target is not None
    return [assess_account(profile, ctx.target.login.user, slurm_facts(ctx))]


def _account_fix(profile: ClusterProfile, what: str) -> str:
    envs = profile.account_envs()
    how = f"export {envs[0]}={what}" if envs else f"set slurm.account: {what}"
    return f"{how} (or slurm.account in clusters/overrides/{profile.name}.yaml)"


def assess_account(profile: ClusterProfile, user: str, facts: SlurmFacts) -> CheckResult:
    assert profile.slurm is not None
    account = profile.account()
    if account is None:
        if profile.slurm.account_required:
            return failed("account", f"no Slurm account set, and {profile.name} requires one", _account_fix(profile, "<your project account>"))
        return passed("account", "none set: sbatch uses your default account")
    variable = profile.account_source()
    source = f"${variable}" if variable else profile.source("slurm", "account")
    if facts.associations is None:
        return passed("account", f"{account} ({source}): not verified, sacctmgr failed: {facts.errors.get('assoc', '?')}")
    accounts = sorted({a.account for a in facts.associations})
    if account.lower() not in accounts:
        return failed("account", f"{account} ({source}) is not associated with user {user} (their accounts: {', '.join(accounts) or 'none'})",
                      _account_fix(profile, f"<one of {', '.join(accounts)}>" if accounts else "<your project account>")
                      + f"; or ask the site to add {user} to {account}")
    return passed("account", f"{account} ({source}) is associated with user {user}")


def time_limit(partition: PartitionInfo, qos: QosInfo | None, qos_name: str | None) -> tuple[int | None, str]:
    """The longest time a job may ask for on this partition with this QoS, and where that limit comes from.

    A QoS with the PartitionTimeLimit flag replaces the partition's MaxTime by its MaxWall (Leonardo's lprod QoS).
    """
    by_qos = (qos.max_wall_s, f"MaxWall {qos.max_wall} of QoS {qos_name}") if qos is not None and qos.max_wall_s is not None else None
    if qos is not None and "PartitionTimeLimit" in qos.flags:
        return by_qos or (None, f"no limit (QoS {qos_name} overrides the partition's)")
    by_partition = (partition.max_time_s, f"MaxTime {partition.max_time} of partition {partition.name}") if partition.max_time_s is not None else None
    limits = [limit for limit in (by_partition, by_qos) if limit is not None]
    return min(limits, key=lambda limit: limit[0]) if limits else (None, "no limit")  # a tie names the partition


def assess_class(profile: ClusterProfile, cname: str, facts: SlurmFacts) -> CheckResult:
    """One line for a partition class: partition, QoS, account, time limits and GPUs, as Slurm sees them."""
    assert profile.slurm is not None
    slurm, pclass = profile.slurm, profile.slurm.partitions[cname]
    check, account = f"partition class {cname}", profile.account()

    def at(key: str) -> str:
        return profile.source("slurm", "partitions", cname, key)

    if facts.partitions is None:
        return failed(check, f"cannot read partitions: scontrol failed: {facts.errors.get('partitions', '?')}",
                      "re-run; if it persists, ask the site whether scontrol works on the login node")
    problems, fixes, notes = [], [], []
    part = facts.partitions.get(pclass.partition)
    if part is None:
        problems.append(f"partition {pclass.partition} does not exist (there are: {', '.join(sorted(facts.partitions))})")
        fixes.append(f"set {at('partition')} to one of them")
    else:
        notes.append(f"partition {part.name}")
    # An account without any association is the account line's finding, not every class's.
    associated = facts.associations is None or account is None or any(a.account == account.lower() for a in facts.associations)
    if pclass.qos:
        allowed = facts.allowed_qos(account if associated else None, pclass.partition)
        if facts.qos is not None and pclass.qos not in facts.qos:
            problems.append(f"QoS {pclass.qos} does not exist (there are: {', '.join(sorted(facts.qos))})")
            fixes.append(f"set {at('qos')} to one of them")
        elif allowed is not None and pclass.qos not in allowed:
            problems.append(f"QoS {pclass.qos} is not allowed for your association{f' with account {account}' if account and associated else ''} "
                            f"(allowed: {', '.join(sorted(allowed)) or 'none'})")
            fixes.append(f"set {at('qos')} to an allowed QoS, or ask the site to grant {pclass.qos}")
        elif part is not None and (pclass.qos.lower() in part.deny_qos or (part.allow_qos is not None and pclass.qos.lower() not in part.allow_qos)):
            problems.append(f"partition {part.name} does not accept QoS {pclass.qos} (AllowQos={','.join(sorted(part.allow_qos or [])) or 'ALL'})")
            fixes.append(f"set {at('qos')} to a QoS the partition accepts")
        else:
            notes.append(f"QoS {pclass.qos}")
    if part is not None and account and associated:
        acc = account.lower()
        on_partition = facts.associations is None or any(a.account == acc and a.partition in ("", part.name) for a in facts.associations)
        if acc in part.deny_accounts or (part.allow_accounts is not None and acc not in part.allow_accounts) or not on_partition:
            problems.append(f"account {account} may not use partition {part.name}")
            fixes.append(f"choose another partition for {cname}, or ask the site to allow {account} on {part.name}")
    if part is not None:
        qos = (facts.qos or {}).get(pclass.qos or "")
        limit_s, limit = time_limit(part, qos, pclass.qos)
        for key, value, where in (("max_time", pclass.max_time or slurm.max_time, at("max_time") if pclass.max_time else profile.source("slurm", "max_time")),
                                  ("default_time", pclass.default_time or slurm.default_time,
                                   at("default_time") if pclass.default_time else profile.source("slurm", "default_time"))):
            if value and limit_s is not None and parse_time_s(value) > limit_s:
                problems.append(f"{key} {value} ({where}) exceeds the {limit}")
                fixes.append(f"lower {where.split()[-1]} to at most {_slurm_time(limit_s)}")
            elif value and key == "max_time":
                notes.append(f"max_time {value} within {limit}")
        if pclass.gpus_per_node > 0:
            have = gpus_per_node(facts.gres.get(part.name, []))
            if have == 0:
                shown = ", ".join(facts.gres.get(part.name, [])) or "nothing"
                problems.append(f"{cname} asks for {pclass.gpus_per_node} GPUs per node, but the nodes of {part.name} have no GPU GRES (sinfo %G: {shown})")
                fixes.append(f"point {at('partition')} at a GPU partition, or set gpus_per_node: 0")
            elif have < pclass.gpus_per_node:
                problems.append(f"{cname} asks for {pclass.gpus_per_node} GPUs per node, but nodes of {part.name} have at most {have}")
                fixes.append(f"lower {at('gpus_per_node')} to {have}")
            else:
                notes.append(f"{pclass.gpus_per_node} of {have} GPUs per node")
    if problems:
        return failed(check, "; ".join(problems), "; ".join(fixes))
    return passed(check, ", ".join(notes))


def _slurm_time(seconds: int) -> str:
    days, rest = divmod(seconds, 86400)
    text = f"{rest // 3600:02d}:{rest % 3600 // 60:02d}:{rest % 60:02d}"
    return f"{days}-{text}" if days else text


def check_partition_classes(ctx: Context) -> list[CheckResult]:
    profile = ctx.profile
    assert profile is not None and profile.slurm is not None
    facts = slurm_facts(ctx)
    return [assess_class(profile, cname, facts) for cname in profile.slurm.partitions]


# --- --submit: a no-op job per partition class ------------------------------------------------

# Pending reasons that only say the queue is busy: the job was accepted and would run.
BUSY = {"Priority", "Resources", "None", "BeginTime", "PartitionNodeLimit"}


def noop_job_command(pclass: PartitionClass, profile: ClusterProfile) -> str:
    """sbatch for a 1-minute no-op job in this class, with the account, QoS and GPU a real job would carry."""
    slurm = profile.slurm
    assert slurm is not None
    q = shlex.quote
    args = ["sbatch", "--parsable", "--job-name=hpc-doctor", "-p", q(pclass.partition)]
    if pclass.qos:
        args += ["--qos", q(pclass.qos)]
    if profile.account():
        args += ["-A", q(profile.account() or "")]
    args += ["-t", "1", "-c", "1"]
    if "mem" not in pclass.omit_directives:
        args.append("--mem=100M")
    if pclass.gpus_per_node > 0:
        args.append(q(slurm.gpu_directive.replace("{gpus}", "1")))
    args += [q(d) for d in (*slurm.extra_directives, *pclass.extra_directives)]
    return " ".join([*args, "-o", "/dev/null", "--wrap=true"])


def check_test_jobs(ctx: Context) -> list[CheckResult]:
    profile = ctx.profile
    assert profile is not None and profile.slurm is not None and ctx.transport is not None
    client = SlurmClient(ctx.transport)
    results: dict[str, CheckResult] = {}
    jobs: dict[str, str] = {}
    for cname, pclass in profile.slurm.partitions.items():
        check = f"test job {cname}"
        if not ctx.ok(f"partition class {cname}"):
            results[cname] = skipped(check, f"partition class {cname}")
            continue
        answer = ctx.transport.run(noop_job_command(pclass, profile), check=False, timeout=ctx.command_timeout_s, idempotent=False)
        try:
            jobs[cname] = parse_job_id(answer.stdout) if answer.exit_code == 0 else ""
        except ValueError:
            jobs[cname] = ""
        if not jobs[cname]:
            results[cname] = failed(check, f"sbatch refused it: {one_line(answer.stderr or answer.stdout) or f'exit {answer.exit_code}'}",
                                    "the message is Slurm's: correct the account, partition or QoS it names")
            del jobs[cname]
    records: dict[str, tuple[str, str, str]] = {}
    deadline = time.monotonic() + ctx.submit_wait_s
    while jobs:
        ids = ",".join(jobs.values())
        records = parse_sacct_jobs(ctx.run(f"sacct -n -P -X -j {ids} -o JobID,Submit,Start,State").stdout)
        if all(records.get(j, ("", "", ""))[2] not in ACTIVE | {""} for j in jobs.values()) or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    for cname, job_id in jobs.items():
        results[cname] = _test_job_result(f"test job {cname}", job_id, records.get(job_id), client, ctx.submit_wait_s)
    return [results[c] for c in profile.slurm.partitions if c in results]


def _test_job_result(check: str, job_id: str, record: tuple[str, str, str] | None, client: SlurmClient, waited_s: float) -> CheckResult:
    submit, start, state = record or ("", "", "")
    wait = queue_wait_s(submit, start)
    if state and state not in ACTIVE:
        if state == "COMPLETED":
            return passed(check, f"job {job_id} COMPLETED, queue wait {duration(wait) if wait is not None else 'unknown'}")
        return failed(check, f"job {job_id} ended {state} (a job running `true` should complete)",
                      f"look at `sacct -j {job_id}` and `scontrol show node` for the nodes of this partition; tell the site if nodes fail jobs")
    queued = client.queue_state(job_id)
    client.cancel(job_id)
    reason = queued.reason if queued else "unknown"
    if wait is not None:
        return passed(check, f"job {job_id} started after {duration(wait)} in the queue, still {state} after {waited_s:.0f}s: cancelled")
    if reason in BUSY:
        return passed(check, f"job {job_id} accepted, still PENDING ({reason}) after {waited_s:.0f}s: cancelled; the queue is busy, wait unknown")
    return failed(check, f"job {job_id} still PENDING after {waited_s:.0f}s with reason {reason}: cancelled",
                  f"the reason is Slurm's (see `man squeue`, JOB REASON CODES): {reason} usually needs the profile or the site to change")
