"""Fit a model as `src.train` builds it, timing the training loop alone."""

from __future__ import annotations

import time

import hydra
import lightning as L
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig

from src.utils.instantiate import instantiate_all


class StepTimer(Callback):
    """Wall time from the start of optimizer step `skip` to the end of training: `seconds` with the
    validations in between, `training_seconds` without them (what a loop that never validates measures)."""

    def __init__(self, skip: int = 0) -> None:
        self.skip = skip
        self.start = self.end = 0.0
        self.validation_seconds = 0.0
        self._validation_start = 0.0

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        if trainer.global_step == self.skip and not self.start:
            self.start = time.perf_counter()

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._validation_start = time.perf_counter()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.start and not trainer.sanity_checking:
            self.validation_seconds += time.perf_counter() - self._validation_start

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.end = time.perf_counter()

    @property
    def seconds(self) -> float:
        return self.end - self.start

    @property
    def training_seconds(self) -> float:
        return self.seconds - self.validation_seconds


def timed_fit(cfg: DictConfig, skip: int = 0) -> tuple[StepTimer, L.Trainer, L.LightningModule, L.LightningDataModule]:
    """Build datamodule, model, callbacks, loggers and trainer from `cfg` and fit; return the timer and all."""
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = hydra.utils.instantiate(cfg.data, _convert_="all")
    model = hydra.utils.instantiate(cfg.model, _convert_="all")
    timer = StepTimer(skip)
    callbacks = [*instantiate_all(cfg.callbacks, "callback"), timer]
    loggers = instantiate_all(cfg.logger, "logger")
    trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers, _convert_="all")
    trainer.fit(model, datamodule=datamodule)
    return timer, trainer, model, datamodule
