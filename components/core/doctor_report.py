"""What `hpc doctor` reports: one result per check, printed as a line or as JSON for CI.

    ✓ <check>: <detail>
    ✗ <check>: <problem> — fix: <what to do>
    - <check>: skipped (needs <check>)

In JSON every result is {"check", "ok", "detail", "fix"}; `ok` is null for a skipped check.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field

PASS, FAIL, SKIP = "✓", "✗", "-"


@dataclass(frozen=True)
class CheckResult:
    check: str
    ok: bool | None  # None: skipped because a check it needs did not pass
    detail: str
    fix: str | None = None
    # The registered check that produced this line (its name); not part of the output.
    group: str = field(default="", compare=False)

    def as_dict(self) -> dict:
        return {"check": self.check, "ok": self.ok, "detail": self.detail, "fix": self.fix}

    def line(self) -> str:
        if self.ok is None:
            return f"{SKIP} {self.check}: {self.detail}"
        if self.ok:
            return f"{PASS} {self.check}: {self.detail}"
        return f"{FAIL} {self.check}: {self.detail}" + (f" — fix: {self.fix}" if self.fix else "")


def passed(check: str, detail: str) -> CheckResult:
    return CheckResult(check, True, detail)


def failed(check: str, problem: str, fix: str | None) -> CheckResult:
    return CheckResult(check, False, problem, fix)


def skipped(check: str, needs: str) -> CheckResult:
    return CheckResult(check, None, f"skipped (needs {needs})")


def render_text(results: Iterable[CheckResult]) -> str:
    return "".join(r.line() + "\n" for r in results)


def render_json(results: Iterable[CheckResult]) -> str:
    return json.dumps([r.as_dict() for r in results], indent=2, ensure_ascii=False) + "\n"


def exit_code(results: Iterable[CheckResult]) -> int:
    """0 when every check passed; 1 when any failed or was skipped."""
    return 0 if all(r.ok for r in results) else 1


def one_line(text: str, limit: int = 300) -> str:
    """Command output folded into one line for a report: blank lines dropped, long text cut."""
    folded = " | ".join(line.strip() for line in str(text).splitlines() if line.strip())
    return folded if len(folded) <= limit else folded[: limit - 3] + "..."


def duration(seconds: float) -> str:
    """3h 12min, 42min, 5s: how long until something happens, for people."""
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}min"
    if minutes:
        return f"{minutes}min"
    return f"{secs}s"
