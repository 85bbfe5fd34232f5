"""What goes into checkpoints beyond Lightning's own: the run's config, and slim exported copies."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_only

from src.utils.checkpoint import AtomicCheckpointIO

log = logging.getLogger(__name__)


class SaveRunConfig(Callback):
    """Store the run's resolved config (plain containers) in every checkpoint under "config".

    With it a checkpoint is self-contained: `src.eval` and `src.sample` rebuild the model (and,
    for eval, the data) from `config["model"]` and `config["data"]`, with no config files at hand.
    """

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        checkpoint["config"] = self.config


class ExportBestCheckpoint(Callback):
    """At the end of fitting, write the best checkpoint's weights and config to `path`.

    The copy holds what inference needs (state_dict, hyper_parameters, config) and no optimizer
    state, so it is small enough to commit; it is written atomically, so a crash never leaves a
    half-written file at `path`.
    """

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    @rank_zero_only
    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        if not best:
            log.warning(f"No best checkpoint to export to {self.path}")
            return
        checkpoint = torch.load(best, map_location="cpu", weights_only=True)
        slim = {key: checkpoint[key] for key in ("state_dict", "hyper_parameters", "config", "epoch", "global_step")}
        slim["exported_from"] = str(best)
        AtomicCheckpointIO().save_checkpoint(slim, self.path)
        log.info(f"Exported {best} to {self.path}")
