"""Advisory locks that keep two processes out of one folder: a sweep's, or a run's while it trains."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO


def try_lock(path: Path) -> tuple[IO[str] | None, str]:
    """An exclusive lock on the file `path` (created if need be), held while the returned file stays open and
    released by the kernel when the process ends, however it ends: (the open file, "") if this process got it,
    else (None, the holder's process id as it wrote it)."""
    lock = open(path, "a+")  # noqa: SIM115 (kept open as long as the lock is held); a+: the holder's pid stays readable
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        holder = lock.read().strip()
        lock.close()
        return None, holder
    lock.truncate(0)
    lock.write(f"{os.getpid()}\n")
    lock.flush()
    return lock, ""
