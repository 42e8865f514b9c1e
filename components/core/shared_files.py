"""What processes on one machine share about a cluster without a daemon: an exclusive lock on a
file (fcntl.flock, released by the kernel when its holder dies) and files replaced whole."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

from components.core.errors import ConfigError


class LockTimeout(TimeoutError):
    """Another process held the lock longer than the caller would wait."""


@contextlib.contextmanager
def flocked(path: Path, wait_s: float) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created 0600); raises LockTimeout after `wait_s` seconds."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        # Polled, not blocking: a blocking flock cannot time out without signals.
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
    part = path.with_name(f".{path.name}.{os.getpid()}.part")
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(value, out)
    os.replace(part, path)


def read_json(path: Path, default=None):
    """The JSON in `path`, or `default` when it is missing or unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return default


def private_dir(path: Path, what: str = "this directory") -> Path:
    """`path`, created 0700 (parents too), or checked when it exists: a directory (not a symlink),
    ours, closed to group and others, since whoever can write there can forge what processes share.
    Raises ConfigError naming `what`, the path and the fix."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode):
        raise ConfigError(f"{what} {path} is not a directory (a symlink or a file)", fix=f"remove {path}; it is created anew")
    if info.st_uid != os.geteuid() or info.st_mode & 0o077:
        raise ConfigError(
            f"{what} {path} is not private to you (owner uid {info.st_uid}, mode {stat.S_IMODE(info.st_mode):o}): "
            "whoever can write there could run commands as you or forge job states",
            fix=f"chmod 700 {path} (and make sure you own it), or point $HPC_SESSION_DIR at a directory of yours")
    return path
