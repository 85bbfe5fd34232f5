"""Interrupted runs: a last checkpoint on Ctrl-C (SIGINT) or preemption (SIGTERM), and one line saying what was
saved and how to go on, whichever phase the signal lands in."""

from __future__ import annotations

import contextlib
import logging
import signal
from collections.abc import Iterator
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException

from src.errors import RunInterrupted

log = logging.getLogger(__name__)

PHASES = {"sanity_check": "the sanity check", "train": "training", "validate": "validation", "test": "the test"}


class CheckpointOnInterrupt(Callback):
    """On SIGINT or SIGTERM during fit, write <checkpoints>/last.ckpt before the run ends; remember the signal and
    the phase it landed in (sanity check, training, validation, test).

    Lightning turns SIGTERM into SIGTERMException between two batches, so that checkpoint holds a
    whole step. Ctrl-C interrupts wherever the program is: if it lands inside an optimizer step, the
    checkpoint holds that half-updated state (rare, as the update is a small part of a step).
    Checkpoints are written atomically (src.utils.checkpoint_writer.AtomicCheckpointIO).
    """

    def __init__(self) -> None:
        self.signal: signal.Signals | None = None
        self.phase: str | None = None
        self.path: Path | None = None

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, KeyboardInterrupt):
            self.signal = signal.SIGINT
        elif isinstance(exception, SIGTERMException):
            self.signal = signal.SIGTERM
        else:
            return
        stage = trainer.state.stage.value if trainer.state.stage else "train"
        self.phase = PHASES.get(stage, stage)
        checkpoints = trainer.checkpoint_callback
        if trainer.state.fn != "fit" or not isinstance(checkpoints, ModelCheckpoint) or checkpoints.dirpath is None:
            return
        name = ModelCheckpoint.CHECKPOINT_NAME_LAST + ModelCheckpoint.FILE_EXTENSION  # last.ckpt
        self.path = Path(checkpoints.dirpath) / name
        trainer.save_checkpoint(self.path)
        log.warning(f"{self.signal.name} at step {trainer.global_step}: saved {self.path}")

    @contextlib.contextmanager
    def reported(self, trainer: L.Trainer, how_to_go_on: str) -> Iterator[None]:
        """Around one Trainer call: an interruption ends it as RunInterrupted (exit 128 + the signal's number) with
        one line naming the signal, the phase, what was saved, and `how_to_go_on`.

        A SIGTERM that arrives during the last batch of an evaluation lets the call finish (Lightning checks
        for it between batches only): it is reported all the same, as a scheduler that sent it expects.
        """
        try:
            yield
        except (KeyboardInterrupt, SystemExit):  # Lightning ends a Ctrl-C with exit(1), a SIGTERM with exit()
            if self.signal is None:
                raise
        else:
            if not trainer.received_sigterm:
                return
            self.signal = signal.SIGTERM
            self.phase = "the last batch of " + (
                "training" if trainer.state.fn == "fit" else PHASES[trainer.state.fn.value]
            )
        if self.path is None and trainer.state.fn == "fit":  # checkpointing off: there is nothing to resume from
            saved, how_to_go_on = "nothing was saved (no checkpoint callback)", "Run the same command again"
        else:
            saved = f"saved {self.path}" if self.path else "no checkpoint saved by this phase"
        raise RunInterrupted(
            f"{self.signal.name} during {self.phase} at step {trainer.global_step}; {saved}. {how_to_go_on}",
            exit_code=128 + self.signal,
        ) from None


@contextlib.contextmanager
def interruptible(phase: str, how_to_go_on: str) -> Iterator[None]:
    """Outside the Trainer (scoring samples, generating): SIGINT and SIGTERM end the block as RunInterrupted."""

    def interrupt(signum: int, frame: object) -> None:
        name = signal.Signals(signum).name
        raise RunInterrupted(f"{name} during {phase}; nothing was written. {how_to_go_on}", exit_code=128 + signum)

    previous = {signum: signal.signal(signum, interrupt) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
