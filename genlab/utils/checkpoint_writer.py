"""Checkpoint files through Lightning: written atomically, read back only through the one checked reader."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from genlab.errors import one_line
from genlab.utils.checkpoint_reader import CheckpointError, read_checkpoint
from genlab.utils.files import replaced_atomically


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write each checkpoint to a temporary file beside its target, sync it to disk, then rename it over the target;
    read each one (a resumed fit, a test on the best checkpoint) with `read_checkpoint`.

    A run killed during a save (kill -9, a node lost) leaves the previous checkpoint whole; at worst a stray
    `.<name>.partial` remains, overwritten by the next save. Lightning's own writer stages the file in the
    system's temporary folder and moves it, which is a copy, not a rename, when that folder is on another
    file system (tmpfs, a node's local disk against a shared one). Checkpoints are written to local files only.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None) -> None:
        if storage_options is not None or "://" in str(path):
            raise CheckpointError(f"{path}: genlab writes checkpoints to local folders only (paths.output_dir)")
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with replaced_atomically(path, "wb") as file:
                torch.save(checkpoint, file)
        except OSError as err:  # a full disk, a read-only or missing folder: the previous checkpoint stays whole
            cause = (err.strerror or one_line(err)) + (f" ({err.filename})" if err.filename else "")
            raise CheckpointError(
                f"could not write the checkpoint {path}: {cause}; the previous one, if any, is unchanged"
            ) from None

    def load_checkpoint(self, path: str | Path, map_location: Any | None = None, weights_only: bool | None = None):
        # on the CPU, whatever map_location asks: Lightning moves the states to the devices it restores them on
        return read_checkpoint(path)
