"""A run's progress: Lightning's rich bar on a terminal, and plain lines where the output goes to a file (a log,
nohup, a SLURM job), where the bar never draws. Both show the losses, the step rather than the logger's version,
and the speed as nanoGPT prints it (ms per step; on a GPU, MFU for a model that declares its FLOPs)."""

from __future__ import annotations

import datetime
import logging
import time
from collections.abc import Mapping
from typing import Annotated, Any

import lightning as L
import rich
import torch
from lightning.pytorch.callbacks import ProgressBar as LightningProgressBar
from lightning.pytorch.callbacks import RichProgressBar
from lightning.pytorch.trainer.states import TrainerFn
from pydantic import Field

from genlab.capabilities import DeclaresFlops

log = logging.getLogger(__name__)


def progress_bar(
    peak_flops: Annotated[float | None, Field(gt=0)] = None,
    line_every_n_steps: Annotated[int, Field(ge=1)] = 100,
    line_every_s: Annotated[float, Field(gt=0)] = 30.0,
) -> ProgressBar | ProgressLines:
    """The rich bar where it can draw (a terminal, a notebook); elsewhere one plain line every `line_every_n_steps`
    steps or `line_every_s` seconds, whichever comes first. FORCE_TERMINAL=1 (rich's) asks for the bar anyway."""
    console = rich.get_console()  # the console Lightning's rich bar draws on
    if console.is_interactive or console.is_jupyter:
        return ProgressBar(peak_flops=peak_flops)
    return ProgressLines(peak_flops, line_every_n_steps, line_every_s)


class StepSpeed:
    """ms per training batch, a moving average (0.9, as nanoGPT's) of the time from one batch's end to the next, so
    that loading, logging and the optimizer count; the step across a validation is left out. On a GPU, for a model
    that is a DeclaresFlops, MFU: its FLOPs per batch over that time, against `peak_flops` (FLOP/s; None: measured
    once, bf16 matmuls)."""

    SMOOTHING = 0.9

    def __init__(self, peak_flops: float | None) -> None:
        self.peak_flops = peak_flops
        self.ms_per_step: float | None = None
        self.mfu: float | None = None
        self.last_batch_end: float | None = None

    def start(self, pl_module: L.LightningModule) -> None:
        """At the start of training: the bf16 peak measured, where MFU is shown and none was declared."""
        if self.shows_mfu(pl_module) and self.peak_flops is None:
            self.peak_flops = measured_bf16_peak(pl_module.device)
            peak = f"{self.peak_flops / 1e12:.0f} TFLOP/s"
            log.info(f"MFU against a measured bf16 peak of {peak} (or declare: callbacks.rich_progress_bar.peak_flops)")

    def batch_end(self, pl_module: L.LightningModule, batch: Any) -> None:
        now = time.perf_counter()
        if self.last_batch_end is not None:
            self.ms_per_step = smoothed(self.ms_per_step, 1000 * (now - self.last_batch_end), self.SMOOTHING)
            if self.shows_mfu(pl_module) and self.peak_flops:
                self.mfu = pl_module.flops_per_batch(batch) / (self.ms_per_step / 1000) / self.peak_flops
        self.last_batch_end = now

    def pause(self) -> None:
        """A validation starts: the time until the next batch's end is not a training step's."""
        self.last_batch_end = None

    def summary(self) -> str | None:
        """`12.3 ms/step, MFU 45.6%`, or None before two batches have ended."""
        if self.ms_per_step is None:
            return None
        return f"{self.ms_per_step:.1f} ms/step" + (f", MFU {self.mfu:.1%}" if self.mfu is not None else "")

    @staticmethod
    def shows_mfu(pl_module: L.LightningModule) -> bool:
        return pl_module.device.type == "cuda" and isinstance(pl_module, DeclaresFlops)


class ProgressBar(RichProgressBar):
    """RichProgressBar without `v_num` (a logger's version, W&B's run id: no use beside the losses, and it pushed
    them past 80 columns), and with `step`, of max_steps for the step-based recipes, whose epoch count
    (max_epochs=-1) says nothing, `ms/step`, and on a GPU `mfu` for a model that is a DeclaresFlops (StepSpeed)."""

    def __init__(self, *args: Any, peak_flops: Annotated[float | None, Field(gt=0)] = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.speed = StepSpeed(peak_flops)

    @property
    def ms_per_step(self) -> float | None:
        return self.speed.ms_per_step

    @property
    def mfu(self) -> float | None:
        return self.speed.mfu

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        self.speed.start(pl_module)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        self.speed.batch_end(pl_module, batch)
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.speed.pause()
        super().on_validation_start(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        if self.speed.summary() is not None:  # the bar is gone from the screen: the speed stays in the log
            log.info(f"Speed at the end of training: {self.speed.summary()}")

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


class ProgressLines(LightningProgressBar):
    """The bar's text as one plain line, logged every `every_n_steps` steps or `every_s` seconds (whichever comes
    first), and one after every validation of fit with its `val/` metrics:

        step 200/1300, epoch 0: train/loss 2.104, val/loss 2.215, 31.2 ms/step, 24,615 tokens/s, 0:00:38 left

    The values are the bar's (what the model logs with prog_bar=True; genlab's families log them as host values, so
    that a line costs no host sync); items/s counts a batch's first tensor: integer ids (B, T) as tokens, else B
    items (images for (B, C, H, W)). The time left is the rest of max_steps (or of max_epochs, whichever ends
    first) at this session's pace so far, validations included."""

    def __init__(
        self,
        peak_flops: Annotated[float | None, Field(gt=0)] = None,
        every_n_steps: Annotated[int, Field(ge=1)] = 100,
        every_s: Annotated[float, Field(gt=0)] = 30.0,
    ) -> None:
        super().__init__()
        self.speed = StepSpeed(peak_flops)
        self.every_n_steps, self.every_s = every_n_steps, every_s
        self.enabled = True
        self.items: tuple[int, str] | None = None  # per batch: (count, unit)
        self.started = self.last_line_time = 0.0
        self.start_step = self.last_line_step = 0
        self.batches = 0  # training batches ended in this session
        self.last_batch_idx = self.last_epoch = 0  # the last one's index, and its epoch (at the end, the next's)

    def disable(self) -> None:
        self.enabled = False

    def enable(self) -> None:
        self.enabled = True

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.speed.start(pl_module)
        self.started = self.last_line_time = time.perf_counter()
        self.start_step = self.last_line_step = trainer.global_step  # a resumed run's pace counts from here

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        self.speed.batch_end(pl_module, batch)
        self.batches, self.last_batch_idx, self.last_epoch = self.batches + 1, batch_idx, trainer.current_epoch
        if self.items is None:
            self.items = items_in(batch)
        now = time.perf_counter()
        due = (
            trainer.global_step - self.last_line_step >= self.every_n_steps or now - self.last_line_time >= self.every_s
        )
        if due and self.enabled:
            self.last_line_step, self.last_line_time = trainer.global_step, now
            log.info(self.line(trainer, pl_module, now, batch_idx))

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.speed.pause()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING or not self.enabled:
            return
        metrics = trainer.callback_metrics  # this validation's, computed: read once per validation
        scores = ", ".join(f"{name} {float(value):.4g}" for name, value in metrics.items() if name.startswith("val/"))
        log.info(f"{self.where(trainer, trainer.current_epoch)}: validation {scores}".rstrip())

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.enabled:
            return
        if self.batches and trainer.global_step != self.last_line_step:  # where the run ended, whenever it did
            log.info(self.line(trainer, pl_module, time.perf_counter(), self.last_batch_idx))
        if self.speed.summary() is not None:
            log.info(f"Speed at the end of training: {self.speed.summary()}")

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        return metrics

    @staticmethod
    def where(trainer: L.Trainer, epoch: int) -> str:
        step = f"{trainer.global_step}/{trainer.max_steps}" if trainer.max_steps > 0 else str(trainer.global_step)
        return f"step {step}, epoch {epoch}"

    def line(self, trainer: L.Trainer, pl_module: L.LightningModule, now: float, batch_idx: int) -> str:
        """`step 200/1300, epoch 0: train/loss 2.104, ..., 31.2 ms/step, 24,615 tokens/s, 0:00:38 left`."""
        metrics = dict(sorted(self.get_metrics(trainer, pl_module).items(), key=lambda item: item[0][:6] != "train/"))
        fields = [
            f"{name} {value:.4g}" if isinstance(value, float) else f"{name} {value}" for name, value in metrics.items()
        ]
        if self.speed.ms_per_step is not None:
            fields.append(f"{self.speed.ms_per_step:.1f} ms/step")
            if self.items is not None:
                count, unit = self.items
                fields.append(f"{count / (self.speed.ms_per_step / 1000):,.0f} {unit}/s")
            if self.speed.mfu is not None:
                fields.append(f"mfu {self.speed.mfu:.1%}")
        left = self.seconds_left(trainer, now - self.started, batch_idx)
        if left is not None:
            fields.append(f"{datetime.timedelta(seconds=round(left))} left")
        return f"{self.where(trainer, self.last_epoch)}: {', '.join(fields)}"

    def seconds_left(self, trainer: L.Trainer, elapsed: float, batch_idx: int) -> float | None:
        """The rest of the run at this session's pace so far: to max_steps, or to the end of max_epochs' last
        batch, whichever comes first; None where neither is known (no limit, a loader of unknown length)."""
        estimates = []
        steps_done = trainer.global_step - self.start_step
        if trainer.max_steps > 0 and steps_done > 0:
            estimates.append((trainer.max_steps - trainer.global_step) * elapsed / steps_done)
        per_epoch = trainer.num_training_batches
        if trainer.max_epochs is not None and trainer.max_epochs > 0 and per_epoch != float("inf"):
            batches_left = (trainer.max_epochs - trainer.current_epoch) * per_epoch - (batch_idx + 1)
            estimates.append(max(batches_left, 0) * elapsed / self.batches)
        return min(estimates) if estimates else None


def items_in(batch: Any) -> tuple[int, str] | None:
    """What a batch holds, from its first tensor: integer ids (B, T) are B * T tokens; (B, C, H, W) B images; any
    other tensor B samples. None for a batch without a tensor first."""
    first = batch
    while isinstance(first, (tuple, list, Mapping)) and len(first):
        first = next(iter(first.values())) if isinstance(first, Mapping) else first[0]
    if not isinstance(first, torch.Tensor) or first.dim() == 0:
        return None
    if first.dim() == 2 and not first.is_floating_point():
        return first.numel(), "tokens"
    return len(first), "images" if first.dim() == 4 else "samples"


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
