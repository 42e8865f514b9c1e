"""Slurm's units for memory and wall time: parsing with useful errors, and canonical formatting."""

from __future__ import annotations

import re

_MEM_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(i?B)?\s*$", re.IGNORECASE)
_MEM_FACTOR_MB = {"K": 1 / 1024, "": 1, "M": 1, "G": 1024, "T": 1024 * 1024}


def parse_mem_mb(value: int | str) -> int:
    """'4G' -> 4096. A bare number is megabytes, as in `sbatch --mem`."""
    if isinstance(value, bool):
        raise ValueError(f"memory must be a size such as 4G or 500M, not {value!r}")
    if isinstance(value, int):
        mb = value
    else:
        match = _MEM_RE.match(str(value))
        if not match:
            raise ValueError(
                f"memory {value!r} is not a size: use a number with an optional unit K, M, G or T "
                "(for example 500M, 4G, 1.5T); a bare number means megabytes"
            )
        number, unit = float(match.group(1)), match.group(2).upper()
        # ceil: a size finer than a megabyte is rounded up, never below what the user asked for
        mb = int(-(-(number * _MEM_FACTOR_MB[unit]) // 1))
    if mb <= 0:
        raise ValueError(f"memory {value!r} must be greater than zero")
    return int(mb)


def format_mem(mb: int) -> str:
    """The shortest exact Slurm spelling: 4096 -> '4G', 1536 -> '1536M'."""
    for unit, factor in (("T", 1024 * 1024), ("G", 1024)):
        if mb % factor == 0:
            return f"{mb // factor}{unit}"
    return f"{mb}M"


_TIME_FORMS = (
    # Slurm's accepted spellings, see `man sbatch` under --time.
    (re.compile(r"^(?P<d>\d+)-(?P<h>\d+):(?P<m>\d+):(?P<s>\d+)$"), True),
    (re.compile(r"^(?P<d>\d+)-(?P<h>\d+):(?P<m>\d+)$"), True),
    (re.compile(r"^(?P<d>\d+)-(?P<h>\d+)$"), True),
    (re.compile(r"^(?P<h>\d+):(?P<m>\d+):(?P<s>\d+)$"), True),
    (re.compile(r"^(?P<m>\d+):(?P<s>\d+)$"), False),
    (re.compile(r"^(?P<m>\d+)$"), False),
)


def parse_time_s(value: int | str) -> int:
    """'1-02:00:00' -> 93600 seconds. A bare number is minutes, as in `sbatch --time`."""
    if isinstance(value, bool):
        raise ValueError(f"time must be a duration such as 01:30:00, not {value!r}")
    text = str(value).strip()
    for pattern, minutes_bounded in _TIME_FORMS:
        match = pattern.match(text)
        if not match:
            continue
        parts = {k: int(v) for k, v in match.groupdict().items() if v is not None}
        if parts.get("s", 0) >= 60:
            raise ValueError(f"time {value!r}: seconds must be below 60")
        if minutes_bounded and ("h" in parts or "d" in parts) and parts.get("m", 0) >= 60:
            raise ValueError(f"time {value!r}: minutes must be below 60")
        if "d" in parts and parts.get("h", 0) >= 24:
            raise ValueError(f"time {value!r}: hours must be below 24 when days are given")
        seconds = (
            parts.get("d", 0) * 86400 + parts.get("h", 0) * 3600 + parts.get("m", 0) * 60 + parts.get("s", 0)
        )
        if seconds <= 0:
            raise ValueError(f"time {value!r} must be greater than zero")
        return seconds
    raise ValueError(
        f"time {value!r} is not a Slurm duration: use MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS "
        "(for example 00:30:00 or 1-12:00:00)"
    )


def format_time(seconds: int) -> str:
    """Canonical Slurm spelling: 'HH:MM:SS', or 'D-HH:MM:SS' from one day on."""
    days, rest = divmod(int(seconds), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    clock = f"{hours:02d}:{minutes:02d}:{secs:02d}"
    return f"{days}-{clock}" if days else clock
