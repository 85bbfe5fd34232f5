"""Fit a model as `src.train` builds it, timing the training loop alone."""

from __future__ import annotations

import time

import hydra
import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig

from src.utils.instantiate import instantiate_all


class StepTimer(Callback):
    """Wall time from the start of optimizer step `skip` to the end of training: `seconds` with the
    validations in between, `training_seconds` without them (what a loop that never validates measures).
    A validation counts until the next training batch starts: the checkpoints written after it are not
    training either. `batches` counts the training batches timed (a GAN makes two optimizer steps of each)."""

    def __init__(self, skip: int = 0) -> None:
        self.skip = skip
        self.start = self.end = 0.0
        self.validation_seconds = 0.0
        self.batches = 0
        self._validation_start = 0.0

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        # >=, not ==: a model that steps two optimizers per batch (the GAN) may jump over `skip`
        if trainer.global_step >= self.skip and not self.start:
            _synchronize(pl_module)  # on a GPU the earlier steps may still be running
            self.start = time.perf_counter()
        elif self._validation_start:
            _synchronize(pl_module)
            self._end_validation(time.perf_counter())

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch,
                           batch_idx: int) -> None:  # fmt: skip
        self.batches += bool(self.start)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.start and not trainer.sanity_checking:
            _synchronize(pl_module)
            self._validation_start = time.perf_counter()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        _synchronize(pl_module)
        self.end = time.perf_counter()
        self._end_validation(self.end)

    def _end_validation(self, now: float) -> None:
        if self._validation_start:
            self.validation_seconds += now - self._validation_start
            self._validation_start = 0.0

    @property
    def seconds(self) -> float:
        return self.end - self.start

    @property
    def training_seconds(self) -> float:
        return self.seconds - self.validation_seconds


def _synchronize(pl_module: L.LightningModule) -> None:
    """Wait for the GPU's queued work, so that a time read on the host covers it (a no-op on the CPU)."""
    if pl_module.device.type == "cuda":
        torch.cuda.synchronize(pl_module.device)


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
