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
