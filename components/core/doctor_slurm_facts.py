"""What Slurm tells `hpc doctor`, parsed: the user's associations, QoS, partitions and their GRES
(sacctmgr, scontrol, sinfo, asked in one command, `FACTS_COMMAND`), and sacct's record of a test job.

Plain functions of the commands' text, so that `doctor_slurm`'s judgements can be tested on any site's output.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime

from components.core.doctor_report import one_line
from components.core.doctor_site import parse_markers
from components.core.units import parse_time_s

UNLIMITED = {"UNLIMITED", "INFINITE", "NONE", "N/A", ""}


@dataclass(frozen=True)
class Association:
    account: str  # lower case, as Slurm stores it
    partition: str  # "" = every partition
    qos: frozenset[str]


@dataclass(frozen=True)
class QosInfo:
    max_wall_s: int | None
    max_wall: str
    flags: frozenset[str]


@dataclass(frozen=True)
class PartitionInfo:
    name: str
    max_time_s: int | None
    max_time: str
    allow_qos: frozenset[str] | None  # None = ALL
    deny_qos: frozenset[str]
    allow_accounts: frozenset[str] | None
    deny_accounts: frozenset[str]


def slurm_time_s(text: str) -> int | None:
    """'1-00:00:00', '30:00' (sinfo: minutes:seconds), 'UNLIMITED' -> seconds or None (no limit)."""
    text = text.strip()
    if text.upper() in UNLIMITED:
        return None
    return parse_time_s(text)


def parse_associations(text: str) -> list[Association]:
    """`sacctmgr -n -P show assoc user=$USER format=account,partition,qos`."""
    rows = []
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) >= 3 and parts[0]:
            rows.append(Association(parts[0].lower(), parts[1].strip(), frozenset(q for q in parts[2].split(",") if q)))
    return rows


def parse_qos(text: str) -> dict[str, QosInfo]:
    """`sacctmgr -n -P show qos format=name,maxwall,flags`."""
    found = {}
    for line in text.splitlines():
        parts = (line.strip().split("|") + ["", ""])[:3]
        if parts[0]:
            found[parts[0]] = QosInfo(slurm_time_s(parts[1]), parts[1] or "UNLIMITED", frozenset(f for f in parts[2].split(",") if f))
    return found


def _name_list(value: str | None, all_is_none: bool) -> frozenset[str] | None:
    if value is None or (all_is_none and value.upper() == "ALL"):
        return None if all_is_none else frozenset()
    return frozenset(v.lower() for v in value.split(",") if v and v != "(null)")


def parse_partitions(text: str) -> dict[str, PartitionInfo]:
    """`scontrol show partition -o`: one partition per line of Key=Value fields."""
    found = {}
    for line in text.splitlines():
        fields = dict(item.split("=", 1) for item in line.split() if "=" in item)
        name = fields.get("PartitionName")
        if not name:
            continue
        max_time = fields.get("MaxTime", "UNLIMITED")
        found[name] = PartitionInfo(
            name, slurm_time_s(max_time), max_time,
            _name_list(fields.get("AllowQos"), True), _name_list(fields.get("DenyQos"), False) or frozenset(),
            _name_list(fields.get("AllowAccounts"), True), _name_list(fields.get("DenyAccounts"), False) or frozenset(),
        )
    return found


def parse_gres(text: str) -> dict[str, list[str]]:
    """`sinfo -h -o '%R|%G'`: the GRES of each partition's node groups ('(null)' for none)."""
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        name, sep, gres = line.strip().partition("|")
        if sep:
            found.setdefault(name, []).append(gres.strip())
    return found


def gpus_per_node(gres_groups: list[str]) -> int:
    """The most GPUs one node of these groups has: 'gpu:4', 'gpu:a100:4(S:0-1)', 'gpu:a40:2,mps:100', '(null)'."""
    best = 0
    for gres in gres_groups:
        for item in re.split(r",(?![^()]*\))", gres):
            fields = item.split("(")[0].split(":")
            if fields[0] == "gpu" and len(fields) > 1 and fields[-1].isdigit():
                best = max(best, int(fields[-1]))
    return best


@dataclass
class SlurmFacts:
    associations: list[Association] | None = None
    qos: dict[str, QosInfo] | None = None
    partitions: dict[str, PartitionInfo] | None = None
    gres: dict[str, list[str]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def allowed_qos(self, account: str | None, partition: str) -> frozenset[str] | None:
        """QoS the user's associations allow for this account on this partition; None when unknown."""
        if self.associations is None:
            return None
        rows = [a for a in self.associations
                if (account is None or a.account == account.lower()) and a.partition in ("", partition)]
        if rows and all(not a.qos for a in rows):
            return None  # the QoS column is empty: nothing to judge by
        return frozenset().union(*(a.qos for a in rows))


FACTS_COMMAND = "\n".join(
    f"echo '@@{key}'; timeout 30 {command} 2>&1; echo \"@@{key}_rc $?\""
    for key, command in (
        ("assoc", 'sacctmgr -n -P show assoc user="$USER" format=account,partition,qos'),
        ("qos", "sacctmgr -n -P show qos format=name,maxwall,flags"),
        ("partitions", "scontrol show partition -o"),
        ("gres", "sinfo -h -o '%R|%G'"),
    )
)


def parse_facts(output: str) -> SlurmFacts:
    marks = parse_markers(output)
    facts = SlurmFacts()
    parsers = {"assoc": parse_associations, "qos": parse_qos, "partitions": parse_partitions, "gres": parse_gres}
    for key, parse in parsers.items():
        text, rc = marks.get(key, ""), marks.get(f"{key}_rc", "").strip()
        if rc != "0":
            facts.errors[key] = one_line(text, 200) or f"no answer (exit {rc or '?'})"
            continue
        value = parse(text)
        if key == "assoc":
            facts.associations = value
        elif key == "gres":
            facts.gres = value
        else:
            setattr(facts, key, value)
    return facts


def queue_wait_s(submit: str, start: str) -> int | None:
    """Start - Submit from sacct (2025-01-31T10:00:00), or None while the job has not started."""
    try:
        return int((datetime.fromisoformat(start) - datetime.fromisoformat(submit)).total_seconds())
    except ValueError:
        return None


def parse_sacct_jobs(text: str) -> dict[str, tuple[str, str, str]]:
    """`sacct -n -P -X -o JobID,Submit,Start,State` -> {job id: (submit, start, state)}."""
    found = {}
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 4 and parts[0]:
            found[parts[0]] = (parts[1], parts[2], (parts[3].split() or [""])[0])
    return found
