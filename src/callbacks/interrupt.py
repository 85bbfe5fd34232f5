"""A last checkpoint when a run is interrupted by Ctrl-C (SIGINT) or preempted (SIGTERM)."""

from __future__ import annotations

import logging
import signal
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException

log = logging.getLogger(__name__)


class CheckpointOnInterrupt(Callback):
    """On SIGINT or SIGTERM during fit, write <checkpoints>/last.ckpt before the run ends; remember the signal.

    Lightning turns SIGTERM into SIGTERMException between two batches, so that checkpoint holds a
    whole step. Ctrl-C interrupts wherever the program is: if it lands inside an optimizer step, the
    checkpoint holds that half-updated state (rare, as the update is a small part of a step).
    Checkpoints are written atomically (src.utils.checkpoint.AtomicCheckpointIO).
    """

    def __init__(self) -> None:
        self.signal: signal.Signals | None = None
        self.path: Path | None = None

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, KeyboardInterrupt):
            self.signal = signal.SIGINT
        elif isinstance(exception, SIGTERMException):
            self.signal = signal.SIGTERM
        else:
            return
        checkpoints = trainer.checkpoint_callback
        if trainer.state.fn != "fit" or not isinstance(checkpoints, ModelCheckpoint) or checkpoints.dirpath is None:
            return
        name = ModelCheckpoint.CHECKPOINT_NAME_LAST + ModelCheckpoint.FILE_EXTENSION  # last.ckpt
        self.path = Path(checkpoints.dirpath) / name
        trainer.save_checkpoint(self.path)
        log.warning(f"{self.signal.name} at step {trainer.global_step}: saved {self.path}")
