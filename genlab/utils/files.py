"""Files that a reader finds whole or not at all: written beside their target, synced, then renamed over it."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO


@contextlib.contextmanager
def replaced_atomically(path: Path, mode: str = "w") -> Iterator[IO]:
    """A file to write `path`'s new content to; on leaving, it replaces `path` in one rename.

    A run stopped while writing (a full disk, kill -9, a lost node) leaves the previous `path` whole, or none,
    never half a file: `metrics.json` read by a sweep's summary, a checkpoint read by a resume. On an error the
    partial file is removed and the error goes on.
    """
    partial = path.with_name(f".{path.name}.partial")
    try:
        with open(partial, mode) as file:
            yield file
            file.flush()
            os.fsync(file.fileno())  # the bytes are on disk before the name points at them
        os.replace(partial, path)
        fsync_folder(path.parent)  # and the rename itself survives a power cut
    except BaseException:
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)
        raise


def write_text_atomically(path: Path, text: str) -> None:
    with replaced_atomically(path) as file:
        file.write(text)


def fsync_folder(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
