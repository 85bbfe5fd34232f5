"""The progress bar: Lightning's rich bar, showing the losses and the step rather than the logger's version."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import RichProgressBar


class ProgressBar(RichProgressBar):
    """RichProgressBar without `v_num` (a logger's version, W&B's run id: no use beside the losses, and it pushed
    them past 80 columns), and with `step`, of max_steps for the step-based recipes, whose epoch count
    (max_epochs=-1) says nothing."""

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        step = trainer.global_step
        return {"step": f"{step}/{trainer.max_steps}" if trainer.max_steps > 0 else step, **metrics}

    @property
    def total_train_batches(self) -> int | float:
        # Lightning counts a resumed step-based run's remaining steps as the epoch's total while the bar goes on
        # from the epoch's resumed batch ("30/9"): the total is where the run ends, counted the bar's way
        remaining = super().total_train_batches
        if self.trainer.max_epochs == -1 and self.trainer.max_steps > 0:
            done_this_epoch = self.trainer.fit_loop.epoch_loop.batch_progress.current.ready
            return min(self.trainer.num_training_batches, remaining + done_this_epoch)
        return remaining

    def _get_train_description(self, current_epoch: int) -> str:
        # Lightning 2.6 writes "Epoch 0/-2" when max_epochs=-1 (Lightning-AI/pytorch-lightning#21925, fixed by
        # PR #21924): "Epoch 0" then. Overrides a private method; remove once the pinned Lightning has the fix.
        if self.trainer.max_epochs is not None and self.trainer.max_epochs < 0:
            return f"{f'Epoch {current_epoch}':{len(self.validation_description)}}"
        return super()._get_train_description(current_epoch)
