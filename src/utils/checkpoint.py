"""Load this project's checkpoints safely (weights only) and rebuild their models."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import lightning as L
import torch

from src.errors import GenlabError, one_line
from src.utils.instantiate import instantiate


class CheckpointError(GenlabError):
    """A checkpoint path that is missing, unreadable, unsafe, or not one of this project's."""


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint as data: `torch.load(weights_only=True)`, which never runs code from the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # weights_only's unpickler refuses any global it does not know: a class, or a function to call
        refused = next((line for line in str(err).splitlines() if "GLOBAL" in line), None)
        if refused:
            raise CheckpointError(
                f"{path}: refused to load objects other than tensors and plain data ({refused.strip()}); "
                f"a genlab checkpoint never holds any"
            ) from None
        raise CheckpointError(
            f"{path}: not a readable PyTorch checkpoint, or truncated (not a zip or pickle file)"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as err:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint, or truncated ({one_line(err)})") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint or "config" not in checkpoint:
        found = sorted(checkpoint)[:8] if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise CheckpointError(
            f"{path}: not a genlab checkpoint (expected 'state_dict' and 'config' entries, found {found}); "
            f"checkpoints written by `python -m src.train` have both"
        )
    return checkpoint


def model_from_checkpoint(checkpoint: dict[str, Any]) -> L.LightningModule:
    """Rebuild the LightningModule from the checkpoint's own config and load its weights, in eval mode."""
    model = instantiate(checkpoint["config"]["model"])
    model.on_load_checkpoint(checkpoint)  # as Lightning's load_from_checkpoint: what the model kept besides weights
    model.load_state_dict(checkpoint["state_dict"])
    return model.eval()
