"""Every step's job files on a cluster followed in one command per interval, machine-wide.

Each step process registers the files it follows (its Pipes messages, the job's stdout and stderr)
in the session's directory. Whoever reads first after the interval takes the lock and reads the new
bytes of every registered file in ONE remote command (RemoteTail over all of them), hands each
registration its lines through an inbox file and keeps each file's offset; the others find the
round fresh and only read their inbox. So commands per second stay at one per interval whatever
the number of running steps, and the guarantees of RemoteTail hold unchanged: no line lost or
repeated, a short answer thrown away whole, truncation noticed, partial lines held back until the
file's writer ended.

Files in <session>.poll/tails/: `tails.lock`, `round.json` (when the last round ran and how it
failed), `<key>.json` (a registration: paths, offsets, whether its job ended, when it was last
read), `<key>.inbox` (JSON lines, one per round that brought it something).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path

from components.core.shared_files import LockTimeout, flocked, private_dir, read_json, write_json
from components.core.ssh_target import ContactLost
from components.core.tail import READ_CAP, RemoteTail, ShortRead, TailRead

# A registration nobody read for this long belongs to a step process that died (seconds).
STALE_S = 600.0
# How long a reader waits for the process doing a round (seconds): a round is one remote command.
LOCK_WAIT_S = 180.0
_SEP = "\t"  # between a registration's key and a file's name in the combined tail


class SharedTail:
    """A RemoteTail-like follower (`follow`, `read`, `close`) whose reads are batched with every
    other SharedTail on the same `directory`. `run` is a Transport.run-like callable; `interval_s`
    the least time between two rounds (seconds)."""

    def __init__(self, run, directory: Path, paths: dict[str, str], *, interval_s: float = 0.5, read_cap: int = READ_CAP):
        self._run, self.interval_s, self.read_cap = run, interval_s, read_cap
        self.dir = private_dir(directory / "tails")
        self.key = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self._reg_path = self.dir / f"{self.key}.json"
        self._inbox = self.dir / f"{self.key}.inbox"
        self._inbox_pos = 0
        self._more = False
        self._names = set(paths)
        self.rounds = 0  # rounds this process ran (remote commands)
        with self._locked():
            write_json(self._reg_path, {"paths": dict(paths), "offsets": {n: 0 for n in paths}, "ended": False, "read_at": time.time()})

    def _locked(self):
        return flocked(self.dir / "tails.lock", LOCK_WAIT_S)

    def follow(self, name: str, path: str) -> None:
        """Also follow `path` under `name` from its start (a no-op for a name already followed)."""
        if name in self._names:
            return
        self._names.add(name)
        with self._locked():
            reg = self._registration()
            if name not in reg["paths"]:
                reg["paths"][name] = path
                reg["offsets"][name] = 0
                write_json(self._reg_path, reg)

    def _registration(self) -> dict:
        reg = read_json(self._reg_path)
        if reg is None:  # removed as stale while this process was stopped: start again, offsets kept in the inbox order
            raise ShortRead("this follower's registration was dropped as stale; reading again")
        return reg

    def read(self, final: bool = False) -> TailRead:
        """The lines that reached the followed files since the last read (all of them with `final`,
        which the caller asks once the job ended). Raises ShortRead or ContactLost (nothing consumed:
        the next read gets the same lines) and whatever `run` raises."""
        try:
            with self._locked():
                reg = self._registration()
                reg["read_at"] = time.time()
                if final:
                    reg["ended"] = True
                write_json(self._reg_path, reg)
                last = read_json(self.dir / "round.json", {})
                fresh = time.time() - last.get("at", 0) < self.interval_s
                if final or self._more or not fresh:
                    self._round()
                elif last.get("error"):
                    kind = ContactLost if last.get("kind") == "ContactLost" else ShortRead
                    raise kind(f"the last shared read failed: {last['error']}")
        except LockTimeout as exc:
            raise ContactLost(str(exc)) from None
        return self._consume()

    def _round(self) -> None:
        """One remote command for every live registration; called with the lock held."""
        now = time.time()
        regs: dict[str, dict] = {}
        for path in self.dir.glob("*.json"):
            if path.name == "round.json":
                continue
            reg = read_json(path)
            if reg is None or now - reg.get("read_at", 0) > STALE_S:
                for leftover in (path, path.with_suffix(".inbox")):
                    leftover.unlink(missing_ok=True)
                continue
            regs[path.stem] = reg
        combined = {f"{key}{_SEP}{name}": p for key, reg in regs.items() for name, p in reg["paths"].items()}
        tail = RemoteTail(self._run, combined, self.read_cap)
        tail.offsets = {f"{key}{_SEP}{name}": off for key, reg in regs.items() for name, off in reg["offsets"].items()}
        ended = {f"{key}{_SEP}{name}" for key, reg in regs.items() if reg.get("ended") for name in reg["paths"]}
        self.rounds += 1
        try:
            got = tail.read(final=ended) if combined else TailRead()
        except Exception as exc:
            write_json(self.dir / "round.json", {"at": time.time(), "error": str(exc) or type(exc).__name__,
                                                 "kind": "ContactLost" if isinstance(exc, ContactLost) else "ShortRead"})
            raise
        for key, reg in regs.items():
            mine = {name: got.lines.get(f"{key}{_SEP}{name}", []) for name in reg["paths"]}
            truncated = [name for name in reg["paths"] if f"{key}{_SEP}{name}" in got.truncated]
            if any(mine.values()) or truncated or got.more:
                # The inbox line first: a crash before the offsets are saved repeats lines, never loses them.
                with open(self.dir / f"{key}.inbox", "a", encoding="utf-8") as inbox:
                    inbox.write(json.dumps({"lines": mine, "truncated": truncated, "more": got.more}) + "\n")
            reg["offsets"] = {name: tail.offsets[f"{key}{_SEP}{name}"] for name in reg["paths"]}
            write_json(self.dir / f"{key}.json", reg)
        write_json(self.dir / "round.json", {"at": time.time(), "error": None})

    def _consume(self) -> TailRead:
        out = TailRead()
        self._more = False
        if not self._inbox.exists():
            return out
        with open(self._inbox, "rb") as inbox:
            inbox.seek(self._inbox_pos)
            data = inbox.read()
        complete = data.rfind(b"\n") + 1
        self._inbox_pos += complete
        for line in data[:complete].decode("utf-8").splitlines():
            entry = json.loads(line)
            for name, lines in entry["lines"].items():
                out.lines.setdefault(name, []).extend(lines)
            out.truncated.extend(entry["truncated"])
            self._more = self._more or entry["more"]
        out.more = self._more
        return out

    def close(self) -> None:
        """Stop following: the registration and its inbox go."""
        with self._locked():
            self._reg_path.unlink(missing_ok=True)
            self._inbox.unlink(missing_ok=True)


def follower(transport, paths: dict[str, str], interval_s: float = 0.5):
    """A SharedTail when `transport` is a shared session (its directory batches every step's reads),
    else a RemoteTail of this process alone."""
    session = getattr(transport, "session", None)
    if session is None:
        return RemoteTail(transport.run, paths)
    return SharedTail(transport.run, session.poll_dir, paths, interval_s=interval_s)
