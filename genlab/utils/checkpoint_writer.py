"""Checkpoint files through Lightning: written atomically, read back only through the one checked reader."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import IO, Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from genlab.utils.checkpoint_reader import CheckpointError, read_checkpoint
from genlab.utils.files import kind_of, replaced_atomically

log = logging.getLogger(__name__)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write each checkpoint through genlab's one writer (genlab/utils/files.py: a fresh temporary file beside its
    target, synced, renamed over it; never through a link); read each one (a resumed fit, a test on the best
    checkpoint) with `read_checkpoint`; remove only regular files.

    A run killed during a save (kill -9, a node lost) leaves the previous checkpoint whole; at worst a stray
    `.<name>.<random>.tmp` remains. Lightning's own writer stages the file in the system's temporary folder and
    moves it, which is a copy, not a rename, when that folder is on another file system (tmpfs, a node's local disk
    against a shared one). Checkpoints are written to local files only.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None) -> None:
        if storage_options is not None or "://" in str(path):
            raise CheckpointError(f"{path}: genlab writes checkpoints to local folders only (paths.output_dir)")
        # a full disk, a read-only or missing folder, a link in the checkpoint's place: one line, the previous whole
        with replaced_atomically(Path(path), "wb", "the checkpoint") as file:
            writes = _Writes(file)
            try:
                torch.save(checkpoint, writes)
            except RuntimeError:  # torch's zip writer reports the file's OSError as "unexpected pos ..."
                if writes.error is not None:
                    raise writes.error from None
                raise

    def load_checkpoint(self, path: str | Path, map_location: Any | None = None, weights_only: bool | None = None):
        # on the CPU, whatever map_location asks: Lightning moves the states to the devices it restores them on
        return read_checkpoint(path)

    def remove_checkpoint(self, path: str | Path) -> None:
        """A checkpoint that fell out of ModelCheckpoint's top k: removed if it is a regular file. Lightning's own
        removes recursively whatever is at the path; a link or a folder there is left as it is."""
        path = Path(path)
        if kind_of(path) is None and path.is_file():
            os.unlink(path)
        elif os.path.lexists(path):
            log.warning(f"{path}: {kind_of(path) or 'a folder'}, not a checkpoint genlab wrote; left as it is")


class _Writes:
    """The file torch.save writes to, keeping the OSError of a write that failed (a full disk): torch's zip writer
    turns it into a RuntimeError that does not say why."""

    def __init__(self, file: IO[bytes]) -> None:
        self.file = file
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        try:
            return self.file.write(data)
        except OSError as err:
            self.error = err
            raise

    def flush(self) -> None:
        self.file.flush()
