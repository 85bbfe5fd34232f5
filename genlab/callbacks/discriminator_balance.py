"""Stop a GAN when its discriminator can no longer tell real from generated images."""

from __future__ import annotations

import logging

import lightning as L
from lightning.pytorch.callbacks import Callback

log = logging.getLogger(__name__)


class DiscriminatorBalanceStopping(Callback):
    """Stop once validation D accuracy has stayed within `band` of 50% for `patience` validations in a row.

    Lightning's EarlyStopping stops on a metric that stops improving; this rule stops on one that
    settles inside a band around a target, which EarlyStopping cannot express.
    """

    def __init__(self, monitor: str = "val/d_acc", band: float = 0.05, patience: int = 3) -> None:
        self.monitor = monitor
        self.band = band
        self.patience = patience
        self.count = 0

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.monitor not in trainer.callback_metrics:
            return
        accuracy = float(trainer.callback_metrics[self.monitor])
        self.count = self.count + 1 if abs(accuracy - 0.5) <= self.band else 0
        if self.count >= self.patience:
            log.info(f"{self.monitor} within 0.5 +- {self.band} for {self.patience} validations: stopping")
            trainer.should_stop = True

    def state_dict(self) -> dict:
        return {"count": self.count}

    def load_state_dict(self, state_dict: dict) -> None:
        self.count = state_dict["count"]
