"""Turn a sacct record into the figures users look at: efficiency, queue wait, node-hours."""

from __future__ import annotations

import datetime as dt
import re

from components.core.scheduler import Accounting


def _seconds(clock: str) -> float | None:
    """sacct durations: [D-]HH:MM:SS[.mmm] or MM:SS.mmm."""
    match = re.fullmatch(r"(?:(\d+)-)?(?:(\d+):)?(\d+):(\d+(?:\.\d+)?)", clock.strip())
    if not match:
        return None
    days, hours, minutes, seconds = match.groups()
    return int(days or 0) * 86400 + int(hours or 0) * 3600 + int(minutes) * 60 + float(seconds)


def _timestamp(text: str) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(text)
    except ValueError:
        return None  # "Unknown", "None"


def _mb(rss: str) -> float | None:
    match = re.fullmatch(r"([\d.]+)([KMGT]?)", rss.strip())
    if not match:
        return None
    factor = {"": 1 / 1024**2, "K": 1 / 1024, "M": 1, "G": 1024, "T": 1024**2}[match.group(2)]
    return round(float(match.group(1)) * factor, 1)


SUB_SECOND = "the job ran under a second, below the resolution of sacct's Elapsed"


def not_available(why: str) -> str:
    """The value of a figure that cannot be known for a run: 'n/a: <why>'."""
    return f"n/a: {why}"


def job_metrics(record: Accounting) -> dict[str, object]:
    """The figures of one sacct record; cpu_efficiency is TotalCPU / (Elapsed x NCPUS), or 'n/a: <why>'."""
    f = record.fields
    elapsed = float(f.get("ElapsedRaw") or 0) or (_seconds(f.get("Elapsed", "")) or 0.0)
    ncpus = int(f.get("NCPUS") or 0)
    nnodes = int(f.get("NNodes") or 0)
    total_cpu = _seconds(f.get("TotalCPU", ""))
    submit, start = _timestamp(f.get("Submit", "")), _timestamp(f.get("Start", ""))
    tres = f.get("AllocTRES", "")
    gpus = re.search(r"gres/gpu(?::[^=,]+)?=(\d+)", tres)
    out: dict[str, object] = {
        "slurm_job_id": record.job_id,
        "slurm_state": record.state,
        "slurm_exit_code": f"{record.exit_code}:{record.signal}",
        "elapsed_s": elapsed,
        "node_hours": round(elapsed * nnodes / 3600, 6),
        "alloc_tres": tres,
        "nodes": f.get("NodeList", ""),
    }
    if submit and start:
        out["queue_wait_s"] = max(0.0, (start - submit).total_seconds())
    if total_cpu is not None and elapsed > 0 and ncpus > 0:
        out["cpu_efficiency"] = round(total_cpu / (elapsed * ncpus), 4)
    elif total_cpu is not None and elapsed == 0:
        out["cpu_efficiency"] = not_available(SUB_SECOND)
    rss = _mb(record.max_rss) if record.max_rss else None
    if rss is not None:
        out["max_rss_mb"] = rss
    out["gpus"] = int(gpus.group(1)) if gpus else 0
    return out
