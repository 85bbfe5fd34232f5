"""Folders a download makes: gone again when it fails, so that a failed download leaves nothing behind."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def removed_if_failed(folder: Path) -> Iterator[None]:
    """Within the block, `folder` and any of its missing parents may be created; if the block raises, the outermost
    of those it created is removed again, with whatever the failed download wrote in it (a file whose checksum
    was wrong, a half-extracted archive). Folders that existed before are left as they were."""
    made = [path for path in (folder, *folder.parents) if not path.exists()]  # innermost first
    try:
        yield
    except BaseException:
        if made:
            shutil.rmtree(made[-1], ignore_errors=True)
        raise
