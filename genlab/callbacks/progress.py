"""The progress bar: Lightning's rich bar, showing the losses, the step rather than the logger's version, and the
speed as nanoGPT prints it (ms per step; on a GPU, MFU for a model that declares its FLOPs)."""

from __future__ import annotations

import logging
import time
from typing import Annotated, Any

import lightning as L
import torch
from lightning.pytorch.callbacks import RichProgressBar
from pydantic import Field

from genlab.capabilities import DeclaresFlops

log = logging.getLogger(__name__)


class ProgressBar(RichProgressBar):
    """RichProgressBar without `v_num` (a logger's version, W&B's run id: no use beside the losses, and it pushed
    them past 80 columns), and with `step`, of max_steps for the step-based recipes, whose epoch count
    (max_epochs=-1) says nothing, `ms/step`, and on a GPU `mfu` for a model that is a DeclaresFlops.

    ms/step is a moving average (0.9, as nanoGPT's) of the time from one training batch's end to the next, so it
    counts loading, logging and the optimizer; the steps with a validation between them are left out. MFU is the
    model's FLOPs per step over that averaged time, against `peak_flops` (FLOP/s; None: measured once, bf16 matmuls).
    """

    SMOOTHING = 0.9

    def __init__(self, *args: Any, peak_flops: Annotated[float | None, Field(gt=0)] = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.peak_flops = peak_flops
        self.ms_per_step: float | None = None
        self.mfu: float | None = None
        self.last_batch_end: float | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        if pl_module.device.type == "cuda" and isinstance(pl_module, DeclaresFlops) and self.peak_flops is None:
            self.peak_flops = measured_bf16_peak(pl_module.device)
            peak = f"{self.peak_flops / 1e12:.0f} TFLOP/s"
            log.info(f"MFU against a measured bf16 peak of {peak} (or declare: callbacks.rich_progress_bar.peak_flops)")

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        now = time.perf_counter()
        if self.last_batch_end is not None:
            seconds = now - self.last_batch_end
            self.ms_per_step = smoothed(self.ms_per_step, 1000 * seconds, self.SMOOTHING)
            if pl_module.device.type == "cuda" and isinstance(pl_module, DeclaresFlops) and self.peak_flops:
                self.mfu = pl_module.flops_per_batch(batch) / (self.ms_per_step / 1000) / self.peak_flops
        self.last_batch_end = now
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.last_batch_end = None  # the step across a validation is not a training step's time
        super().on_validation_start(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        if self.ms_per_step is not None:  # the bar is gone from the screen: the speed stays in the log
            mfu = f", MFU {self.mfu:.1%}" if self.mfu is not None else ""
            log.info(f"Speed at the end of training: {self.ms_per_step:.1f} ms/step{mfu}")

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        step = trainer.global_step
        speed = {} if self.ms_per_step is None else {"ms/step": f"{self.ms_per_step:.1f}"}
        if self.mfu is not None:
            speed["mfu"] = f"{self.mfu:.1%}"
        return {"step": f"{step}/{trainer.max_steps}" if trainer.max_steps > 0 else str(step), **speed, **metrics}

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


def smoothed(average: float | None, value: float, smoothing: float) -> float:
    """An exponential moving average, started at the first value."""
    return value if average is None else smoothing * average + (1 - smoothing) * value


def measured_bf16_peak(device: torch.device, size: int = 4096, repeats: int = 20) -> float:
    """FLOP/s of bf16 matrix products on `device`: the peak that MFU is measured against, on any GPU (nanoGPT
    declares an A100's 312 TFLOP/s; a measured peak is a little below the data sheet's)."""
    a = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    b = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    for _ in range(3):  # warm-up: kernel selection, clocks
        a @ b
    torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    torch.cuda.synchronize(device)
    return 2 * size**3 * repeats / (time.perf_counter() - start)
