"""Write this project's checkpoints atomically; load them safely (weights only) and rebuild their models."""

from __future__ import annotations

import logging
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import lightning as L
import torch
import yaml
from hydra.core.hydra_config import HydraConfig
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from src.errors import ConfigError, GenlabError, one_line
from src.utils.instantiate import instantiate

log = logging.getLogger(__name__)


class CheckpointError(GenlabError):
    """A checkpoint path that is missing, unreadable, unsafe, or not one of this project's."""


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write each checkpoint to a temporary file beside its target, sync it to disk, then rename it over the target.

    A run killed during a save (kill -9, a node lost) leaves the previous checkpoint whole; at worst a stray
    `.<name>.partial` remains, overwritten by the next save. Lightning's own writer stages the file in the
    system's temporary folder and moves it, which is a copy, not a rename, when that folder is on another
    file system (tmpfs, a node's local disk against a shared one). Remote URLs keep Lightning's writer.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None) -> None:
        if storage_options is not None or "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.partial")
        with open(partial, "wb") as file:
            torch.save(checkpoint, file)
            file.flush()
            os.fsync(file.fileno())  # the bytes are on disk before the name points at them
        os.replace(partial, path)


def resume_path(ckpt_path: str | None, task_dir: Path) -> str | None:
    """The checkpoint to resume from: `ckpt_path` as given, or for `last` the newest `checkpoints/last.ckpt`
    among the earlier runs under `task_dir` (runs/ and multiruns/) started with this run's overrides
    (ckpt_path aside): re-running the same command continues it. None, with a log line, when there is none.
    """
    if ckpt_path != "last":
        if ckpt_path and "://" not in ckpt_path and not Path(ckpt_path).is_file():
            raise CheckpointError(f"ckpt_path={ckpt_path}: no such checkpoint file (or ckpt_path=last to resume)")
        return ckpt_path
    if not HydraConfig.initialized():
        raise ConfigError("ckpt_path=last finds earlier runs of the same command line: run through `python -m`")
    overrides = _without_ckpt_path(HydraConfig.get().overrides.task)
    candidates = []
    for pattern in ("runs/*/.hydra/overrides.yaml", "multiruns/*/*/.hydra/overrides.yaml"):
        for overrides_file in task_dir.glob(pattern):
            last = overrides_file.parent.parent / "checkpoints" / "last.ckpt"
            if last.is_file() and _without_ckpt_path(yaml.safe_load(overrides_file.read_text()) or []) == overrides:
                candidates.append(last)
    if not candidates:
        log.warning(
            f"ckpt_path=last: no earlier run of these overrides under {task_dir} has a last.ckpt; starting anew"
        )
        return None
    newest = max(candidates, key=lambda path: path.stat().st_mtime)
    log.info(f"ckpt_path=last: resuming from {newest}")
    return str(newest)


def _without_ckpt_path(overrides: list[str]) -> list[str]:
    return sorted(override for override in overrides if not override.lstrip("+~").startswith("ckpt_path="))


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
