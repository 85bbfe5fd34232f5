"""Time a training as users run it: `genlab.train.train(cfg)`, the function `python -m src.train` calls, with a
callback that times its steps (RunStats, from a config: `run_stats_overrides`)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig

from genlab.metrics.sample_fid import SampleFID
from genlab.train import train


class StepTimer(Callback):
    """Wall time of a run's training after its first `skip` optimizer steps: `seconds` with the validations in
    between, `training_seconds` without them (what a loop that never validates measures). The clock starts where a
    plain loop's would: at the start of training (skip=0), or at the end of the batch that completes step `skip`,
    so that every timed batch's loading counts. A validation counts until the next training batch starts: the
    checkpoints written after it are not training either (nor is that batch's loading). `batches` counts the
    training batches timed (a GAN makes two optimizer steps of each)."""

    def __init__(self, skip: int = 0) -> None:
        self.skip = skip
        self.start = self.end = 0.0
        self.validation_seconds = 0.0
        self.batches = 0
        self._validation_start = 0.0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_step >= self.skip:
            self._start(pl_module)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        if self._validation_start:
            _synchronize(pl_module)
            self._end_validation(time.perf_counter())

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int
    ) -> None:
        if self.start:
            self.batches += 1
        # >=, not ==: a model that steps two optimizers per batch (the GAN) may jump over `skip`
        elif trainer.global_step >= self.skip:
            self._start(pl_module)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.start and not trainer.sanity_checking:
            _synchronize(pl_module)
            self._validation_start = time.perf_counter()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        _synchronize(pl_module)
        self.end = time.perf_counter()
        self._end_validation(self.end)

    def _start(self, pl_module: L.LightningModule) -> None:
        _synchronize(pl_module)  # on a GPU the earlier steps may still be running
        self.start = time.perf_counter()

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


def run_stats_overrides(skip: int = 0) -> list[str]:
    """The overrides that add RunStats to a run's callbacks, timing it after optimizer step `skip`."""
    return ["+callbacks.run_stats._target_=benchmarks.timed_fit.RunStats", f"+callbacks.run_stats.skip={skip}"]


def timed_train(cfg: DictConfig) -> dict[str, Any]:
    """Train as `python -m src.train` does: `genlab.train.train(cfg)` itself, with every always-on callback and the
    atomic checkpoint plugin. `cfg` holds RunStats (run_stats_overrides); returned: its run_stats.json."""
    train(cfg)
    return json.loads((Path(cfg.paths.output_dir) / "run_stats.json").read_text())


class RunStats(StepTimer):
    """StepTimer plus peak GPU memory and every validation's metrics with its wall-clock time, written to
    <run>/run_stats.json after each validation and at the end: a run killed at its time limit still reports.

    A callback in the run's config (`+callbacks.run_stats._target_=benchmarks.timed_fit.RunStats`), so the
    same numbers come out of `python -m src.train` and of `src.train.train(cfg)` in this process.

    With `train_budget_s`, it stops the run once that many seconds of training (validations not counted) are
    spent: runs compared at equal compute (benchmarks/leaderboard.py), whatever their validations cost.
    """

    def __init__(self, skip: int = 0, train_budget_s: float | None = None) -> None:
        super().__init__(skip)
        self.train_budget_s = train_budget_s
        self.validations: list[dict[str, float]] = []

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(pl_module.device)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            metrics = {k: v for k, v in floats(trainer.callback_metrics).items() if k.startswith("val/")}
            now = time.perf_counter()  # training so far: less the earlier validations and this one
            train_seconds = (
                now - self.start - self.validation_seconds - (now - self._validation_start) if self.start else 0.0
            )
            self.validations.append(
                {"step": trainer.global_step, "time": time.time(), "train_seconds": train_seconds, **metrics}
            )
            self._write(trainer, pl_module)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args) -> None:
        super().on_train_batch_end(trainer, pl_module, *args)
        if self.train_budget_s is not None and self.start:
            trainer.should_stop |= time.perf_counter() - self.start - self.validation_seconds >= self.train_budget_s

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        self._write(trainer, pl_module)

    @rank_zero_only
    def _write(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        cuda = pl_module.device.type == "cuda"
        stats = {
            "device": str(pl_module.device),
            "precision": str(trainer.precision),
            "training_seconds": self.training_seconds if self.start and self.end else None,
            "seconds": self.seconds if self.start and self.end else None,  # the validations in between too
            "timed_batches": self.batches,
            "peak_memory_bytes": torch.cuda.max_memory_allocated(pl_module.device) if cuda else None,
            "validations": self.validations,
            "metrics": floats(trainer.callback_metrics),
            # where SampleFID keeps its torchmetrics states: they must follow the model onto the GPU
            "sample_fid_device": next(
                (
                    str(cb.quality.fake_features.device)
                    for cb in trainer.callbacks
                    if isinstance(cb, SampleFID) and cb.quality is not None
                ),
                None,
            ),
        }
        (Path(trainer.default_root_dir) / "run_stats.json").write_text(json.dumps(stats, indent=1) + "\n")


def floats(metrics: dict[str, Any]) -> dict[str, float]:
    return {name: float(value) for name, value in metrics.items()}
