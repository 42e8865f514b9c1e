"""Following a job's files on the cluster without losing or repeating a line.

A read asks for every followed file in one command; each file's answer carries its size, the
offset it was read from and an end mark, so a short or garbled answer is recognised and thrown
away whole (offsets move only when everything parsed). A file that shrank below its offset was
truncated (Slurm does that to slurm-<id>.out when it requeues a job without --open-mode=append)
and is read again from the start. Partial last lines wait for the next read, except the final read
after the job ended, which hands them out too.
"""

from __future__ import annotations

import base64
import collections
import shlex
from dataclasses import dataclass, field

# Bytes read from one file in one command; more waits for the next read (which follows at once).
READ_CAP = 8 * 1024 * 1024
# A relayed log line and a line of a failure's stderr tail are cut beyond these (bytes of UTF-8).
LINE_CAP = 64 * 1024
TAIL_LINE_CAP = 2 * 1024


class ShortRead(RuntimeError):
    """The answer of a read was incomplete or garbled; nothing of it was used."""


def cap_line(line: str, limit: int = LINE_CAP) -> str:
    """The line, or its first `limit` bytes with a note saying how much was cut."""
    raw = line.encode("utf-8", errors="replace")
    if len(raw) <= limit:
        return line
    return raw[:limit].decode("utf-8", errors="ignore") + f" [... {_size(len(raw) - limit)} cut]"


def _size(n: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


class StderrTail:
    """The last `lines` lines of a stream, each cut at TAIL_LINE_CAP, for failure messages."""

    def __init__(self, lines: int = 40):
        self._lines: collections.deque[str] = collections.deque(maxlen=lines)

    def append(self, line: str) -> None:
        self._lines.append(cap_line(line, TAIL_LINE_CAP))

    def __len__(self) -> int:
        return len(self._lines)

    def text(self) -> str:
        return "\n".join(self._lines)


@dataclass
class TailRead:
    """What one read delivered: complete lines per file name, and which files had been truncated."""

    lines: dict[str, list[str]] = field(default_factory=dict)
    truncated: list[str] = field(default_factory=list)
    more: bool = False  # some file had more than READ_CAP waiting: read again at once


class RemoteTail:
    """Follow remote files from byte offsets; `run` is a Transport.run-like callable."""

    def __init__(self, run, paths: dict[str, str], read_cap: int = READ_CAP):
        self._run = run
        self.paths = dict(paths)
        self.offsets = {name: 0 for name in paths}
        self.read_cap = read_cap

    def follow(self, name: str, path: str) -> None:
        if name not in self.paths:
            self.paths[name] = path
            self.offsets[name] = 0

    def command(self) -> str:
        parts = []
        for name, path in self.paths.items():
            q = shlex.quote(path)
            parts.append(
                f"s=$(stat -c %s {q} 2>/dev/null || echo -1); o={self.offsets[name]}; "
                f'if [ "$s" -ge 0 ] && [ "$s" -lt "$o" ]; then o=0; fi; printf "%s %s " "$s" "$o"; '
                f'if [ "$s" -gt "$o" ]; then tail -c +$((o + 1)) {q} | head -c {self.read_cap} | base64 -w0; fi; echo " ."'
            )
        return "; ".join(parts)

    def read(self, final: bool | set[str] = False) -> TailRead:
        """One round trip. `final`: True, or the names of the files whose writer has ended (their
        partial last lines are handed out too). Raises ShortRead (offsets unchanged) and whatever
        `run` raises."""
        result = self._run(self.command(), check=False, timeout=120)
        answers = result.stdout.split("\n")
        if len(answers) < len(self.paths) or any(not a.endswith(" .") for a in answers[: len(self.paths)]):
            raise ShortRead(f"{len(answers)} of {len(self.paths)} answers, exit {result.exit_code}")
        out = TailRead()
        offsets = dict(self.offsets)
        for (name, _), answer in zip(self.paths.items(), answers):
            fields = answer[:-2].split(" ")
            if len(fields) != 3 or not fields[1].isdigit() or not fields[0].lstrip("-").isdigit():
                raise ShortRead(f"garbled answer for {name}: {answer[:80]!r}")
            size, start = int(fields[0]), int(fields[1])
            try:
                data = base64.b64decode(fields[2], validate=True)
            except ValueError as exc:
                raise ShortRead(f"undecodable answer for {name}: {exc}") from None
            if size >= 0 and len(data) < min(size - start, self.read_cap):
                raise ShortRead(f"{name}: {len(data)} of {size - start} bytes")
            if start < offsets[name]:
                out.truncated.append(name)
            if len(data) >= self.read_cap:
                out.more = True
            ended = final if isinstance(final, bool) else name in final
            if ended or (len(data) >= self.read_cap and b"\n" not in data):
                complete = len(data)  # the job ended, or one line is longer than a whole read
            else:
                complete = data.rfind(b"\n") + 1
            offsets[name] = start + complete
            out.lines[name] = data[:complete].decode("utf-8", errors="replace").splitlines()
        self.offsets = offsets
        return out
