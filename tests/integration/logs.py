"""Counting what a daemon of the test cluster logged since a moment: logins and commands from an
sshd log (LogLevel VERBOSE: "Accepted <method> for <user>" per login, "Starting session: command"
per command)."""

from __future__ import annotations

from pathlib import Path


class LogMark:
    """Remembers how long a log file was; `count` and `lines` see only what was written after."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.start = self.path.stat().st_size if self.path.exists() else 0

    def lines(self) -> list[str]:
        if not self.path.exists():
            return []
        with self.path.open("rb") as log:
            log.seek(self.start)
            return log.read().decode(errors="replace").splitlines()

    def count(self, needle: str) -> int:
        return sum(needle in line for line in self.lines())
