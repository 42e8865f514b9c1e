"""What processes on one machine share about a cluster without a daemon: an exclusive lock on a
file (fcntl.flock, released by the kernel when its holder dies) and files replaced whole."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path


class LockTimeout(TimeoutError):
    """Another process held the lock longer than the caller would wait."""


@contextlib.contextmanager
def flocked(path: Path, wait_s: float) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created 0600); raises LockTimeout after `wait_s` seconds."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + wait_s
        pause = 0.005
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise LockTimeout(f"{path} was held by another process for {wait_s:.0f}s") from None
                time.sleep(pause)
                pause = min(pause * 2, 0.05)
        yield
    finally:
        os.close(fd)


def write_json(path: Path, value) -> None:
    """Replace `path` whole (readers see the old or the new content, never a mix); mode 0600."""
    part = path.with_name(path.name + f".{os.getpid()}.part")
    part.write_text(json.dumps(value))
    os.chmod(part, 0o600)
    os.replace(part, path)


def read_json(path: Path, default=None):
    """The JSON in `path`, or `default` when it is missing or unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return default


def private_dir(path: Path) -> Path:
    """`path` created 0700 (parents too) and returned."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path
