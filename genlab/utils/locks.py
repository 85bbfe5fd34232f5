"""Advisory locks that keep two processes out of one folder: a sweep's, or a run's while it trains."""

from __future__ import annotations

import fcntl
import os
import stat
from pathlib import Path
from typing import IO

from genlab.errors import FileRefusedError
from genlab.utils.files import kind_of


def try_lock(path: Path) -> tuple[IO[bytes] | None, str]:
    """An exclusive lock on the file `path` (created empty if need be), held while the returned file stays open and
    released by the kernel when the process ends, however it ends: (the open file, "") if this process got it, else
    (None, the holder's process id where this machine's kernel knows it, else "").

    Nothing is ever written into the file: a resumed run that is refused leaves its run folder as it was.
    FileRefusedError for a link or anything but a regular file in its place.
    """
    try:  # O_NOFOLLOW: a link planted in a copied run folder is refused; O_NONBLOCK: so is a FIFO, without waiting
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o666)
    except OSError as err:
        raise FileRefusedError(f"could not lock {path}: {kind_of(path) or err.strerror}") from None
    lock = open(descriptor, "rb")  # noqa: SIM115 (kept open as long as the lock is held)
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):
        lock.close()
        raise FileRefusedError(f"could not lock {path}: {kind_of(path) or 'not a regular file'}")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(descriptor)
        lock.close()
        return None, holder
    return lock, ""


def _holder(descriptor: int) -> str:
    """The process that holds a lock on the file, as Linux lists it in /proc/locks ("" elsewhere, or for a holder on
    another machine of a network file system)."""
    status = os.fstat(descriptor)
    file_id = f"{os.major(status.st_dev):02x}:{os.minor(status.st_dev):02x}:{status.st_ino}"
    try:  # "1: FLOCK  ADVISORY  WRITE 12345 fe:00:2146567 0 EOF"
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return ""
    holders = [line.split() for line in lines if "FLOCK" in line.split() and file_id in line.split()]
    return holders[0][holders[0].index(file_id) - 1] if holders else ""
