"""Histograms of the weights in TensorBoard: how each layer's distribution moves over training (opt-in)."""

from __future__ import annotations

import logging

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only

from genlab.models.previews.image_grid import logger_step

log = logging.getLogger(__name__)


class WeightHistograms(Callback):
    """At the end of each validation, one histogram per parameter tensor (`weights/<name>`) in TensorBoard's
    Histograms and Distributions tabs, at the step of the validation scalars. W&B has its own:
    logger.wandb.watch=parameters."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if not any(isinstance(logger, TensorBoardLogger) for logger in trainer.loggers):
            log.warning("WeightHistograms: no TensorBoard logger to draw them (logger=tensorboard or logger=many)")

    @rank_zero_only
    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        step = logger_step(trainer)
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                for name, weight in pl_module.named_parameters():
                    logger.experiment.add_histogram(f"weights/{name}", weight.detach().float().cpu(), step)
