"""Interrupted runs: Ctrl-C (SIGINT) or a preemption (SIGTERM) stops training at its next safe point, writes
last.ckpt there, and ends with one line saying what was saved and how to go on, whichever phase it landed in.
Any other Trainer call (a test, a validate) stops at once: it has nothing to save. Outside the Trainer's calls,
genlab/utils/signals.py stops a command at once.
"""

from __future__ import annotations

import contextlib
import logging
import signal
from collections.abc import Iterator
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException

from genlab.errors import RunInterrupted
from genlab.utils.run_folder import LAST_CHECKPOINT
from genlab.utils.signals import handling

log = logging.getLogger(__name__)

PHASES = {"sanity_check": "the sanity check", "train": "training", "validate": "validation", "test": "the test"}


class CheckpointOnInterrupt(Callback):
    """During a Trainer call, the first SIGINT or SIGTERM asks the run to stop at its next safe point, where the
    weights, optimizer, loop counters and data position agree: the end of a training batch, or the end of the
    validation that follows it (after its checkpoints). There it writes <checkpoints>/last.ckpt, which resumes as
    the unbroken run would go on. A second SIGINT stops at once, without saving: a half-done step resumes inexactly.

    SIGINT is handled as Lightning handles SIGTERM (its handler sets `trainer.received_sigterm`, and its loops
    stop between two batches). Lightning would also stop in the middle of a validation, and its resume then skips
    the rest of that validation (no val/loss for it, no best checkpoint): a stop asked for before or during a
    validation of fit is held until that validation's end. Checkpoints are written atomically
    (genlab.utils.checkpoint_writer.AtomicCheckpointIO).

    In any other Trainer call (a test, a validate) the first signal stops at once: an evaluation saves nothing, so
    there is no safe point to wait for, and Lightning would wait for the end of the batch under way.
    """

    def __init__(self) -> None:
        self.signal: signal.Signals | None = None  # the signal that ended the run
        self.phase: str | None = None
        self.path: Path | None = None  # the checkpoint written on the way out
        self.forced = False  # stopped at once, not at a safe point: nothing was written
        self.outside_loops = False  # stopped while the Trainer set up or tore down, not in a loop
        self._fitting = False  # the Trainer call under way is fit: a stop waits for its next safe point
        self._requested: signal.Signals | None = None  # the first signal: the run stops at its next safe point
        self._held = False  # a stop held back until the validation under way has ended
        self._lightning_sigterm = None  # Lightning's SIGTERM handler, while ours holds stops during a validation
        self._after_checkpoints = _StopAfterValidation(self)

    # --- signal handlers -----------------------------------------------------------------------------------------

    def _on_sigint(self, signum: int, frame: object) -> None:
        """Ctrl-C: the first asks for a stop at the next safe point, as SIGTERM does; a second stops at once."""
        if self._requested is not None:  # a second Ctrl-C
            self._stop_at_once(signal.SIGINT)
        if signal.getsignal(signal.SIGTERM) == self._on_sigterm:  # outside Lightning's loops: nothing to wait for
            self.outside_loops = True
            self._stop_at_once(signal.SIGINT)
        if not self._fitting:  # a test or a validate: nothing to save
            self._stop_at_once(signal.SIGINT)
        self._requested = signal.SIGINT
        log.warning("SIGINT: stopping at the end of this step, to save it; press Ctrl-C again to stop at once")
        signal.getsignal(signal.SIGTERM)(signum, frame)  # Lightning's SIGTERM handler (or ours that holds it)

    def _on_sigterm(self, signum: int, frame: object) -> None:
        """SIGTERM outside Lightning's loops (setting up, tearing down), or in a call other than fit: stop at once.
        Inside fit's loops Lightning's handler runs first and calls this one too (it chains the handler it found):
        nothing more to do then."""
        if signal.getsignal(signal.SIGTERM) == self._on_sigterm:
            self.outside_loops = True
            self._stop_at_once(signal.SIGTERM)
        if not self._fitting:
            self._stop_at_once(signal.SIGTERM)
        self._requested = self._requested or signal.SIGTERM

    def _hold(self, signum: int, frame: object) -> None:
        """SIGTERM's handler during a validation of fit: the stop waits for the validation's end."""
        self._requested = self._requested or signal.Signals(signum)
        self._held = True

    def _stop_at_once(self, signum: signal.Signals) -> None:
        self.signal, self.forced = signum, True
        raise KeyboardInterrupt  # what Lightning expects of Ctrl-C: it tears the run down and exits

    # --- hooks ------------------------------------------------------------------------------------------------------

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._fitting = stage == "fit"  # before Lightning installs its SIGTERM handler, which would wait for a batch
        if stage == "fit":  # after Lightning has sorted its callbacks: this one runs after the checkpoint callbacks
            trainer.callbacks.append(self._after_checkpoints)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self._after_checkpoints in trainer.callbacks:
            trainer.callbacks.remove(self._after_checkpoints)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn != "fit" or trainer.sanity_checking:  # the sanity check may stop between two batches
            return
        if trainer.received_sigterm:  # asked during the training batch this validation follows
            self._held = True
            # Lightning has no public way to take back a stop request (Trainer.received_sigterm is read-only), and
            # it would stop after this validation's first batch; resumed, Lightning skips the rest of a validation
            # cut short (Lightning #19549, #20288). Can go once a resume finishes a validation cut short.
            trainer._signal_connector.received_sigterm = False  # Lightning #19549, #20288
        self._lightning_sigterm = signal.signal(signal.SIGTERM, self._hold)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, KeyboardInterrupt):
            self.signal, self.forced = self.signal or signal.SIGINT, True
        elif isinstance(exception, SIGTERMException):
            self.signal = self._requested or signal.SIGTERM
        else:
            return
        stage = trainer.state.stage.value if trainer.state.stage else "train"
        self.phase = PHASES.get(stage, stage)
        checkpoints = trainer.checkpoint_callback
        if self.forced or trainer.state.fn != "fit" or not isinstance(checkpoints, ModelCheckpoint):
            return
        if checkpoints.dirpath is None or (trainer.sanity_checking and trainer.ckpt_path is not None):
            return  # a resumed run's sanity check: its checkpoint is still the state to resume from
        path = Path(checkpoints.dirpath) / LAST_CHECKPOINT
        # the run's own last.ckpt, with the optimizer and loop states that a resume needs whatever the
        # ModelCheckpoint's save_weights_only says: this one is written to be resumed from, and the line says how.
        # (Lightning's option of what to save, not torch.load's of what to unpickle: said, or Lightning logs a notice)
        trainer.save_checkpoint(path, weights_only=False)
        self.path = path
        log.warning(f"{self.signal.name} at step {trainer.global_step}: saved {self.path}")

    # --- the one line ---------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def reported(self, trainer: L.Trainer, how_to_go_on: str) -> Iterator[None]:
        """Around one Trainer call: signals handled as the class says, and an interruption ends the call as
        RunInterrupted (exit 128 + the signal's number) with one line naming the signal, the phase, what was
        saved, and `how_to_go_on`.

        A signal that arrives after the loops' last check (in the last batch of an evaluation) lets the call
        finish: it is reported all the same, as a scheduler that sent it expects.
        """
        try:
            with handling({signal.SIGINT: self._on_sigint, signal.SIGTERM: self._on_sigterm}):
                yield
        except (KeyboardInterrupt, SystemExit):  # Lightning ends a Ctrl-C with exit(1), a SIGTERM with exit()
            if self.signal is None:
                raise
        else:
            if self._requested is None and not trainer.received_sigterm:
                return
            self.signal = self._requested or signal.SIGTERM
            self.phase = "the last batch of " + (
                "training" if trainer.state.fn == "fit" else PHASES[trainer.state.fn.value]
            )
        finally:
            if self._after_checkpoints in trainer.callbacks:  # an interrupted fit calls no teardown hooks
                trainer.callbacks.remove(self._after_checkpoints)
        raise RunInterrupted(self._line(trainer, how_to_go_on), exit_code=128 + self.signal) from None

    def _line(self, trainer: L.Trainer, how_to_go_on: str) -> str:
        checkpoints = trainer.checkpoint_callback
        last = None
        if isinstance(checkpoints, ModelCheckpoint):  # its folder is known once the Trainer has set it up
            last = Path(checkpoints.dirpath or trainer.default_root_dir) / LAST_CHECKPOINT
        fit = trainer.state.fn == "fit"
        how = "stopped at once, without saving this step" if self.forced and fit and not self.outside_loops else None
        if self.path:
            saved = f"saved {self.path}"
        elif fit and last is None:  # checkpointing off: there is nothing to resume from
            saved, how_to_go_on = "nothing was saved (no checkpoint callback)", "Run the same command again"
        elif fit and last.is_file():  # stopped at once: the run resumes from an earlier step
            saved = f"the last checkpoint is {last}"
        elif fit:
            saved, how_to_go_on = "nothing was saved yet", "Run the same command again"
        else:
            saved = "no checkpoint saved by this phase"
        phase = self.phase or "the start of the Trainer's call"  # stopped before Lightning reported it
        phase = f"the setup or teardown of {phase}" if self.outside_loops else phase
        what = f"{self.signal.name} during {phase} at step {trainer.global_step}"
        return f"{what}; {how + '; ' if how else ''}{saved}. {how_to_go_on}"


class _StopAfterValidation(Callback):
    """Ends fit at the end of a validation during which (or before which) a stop was asked for: after the checkpoint
    callbacks, so that the validation's checkpoints are written and the run's state is the one they hold."""

    def __init__(self, interrupt: CheckpointOnInterrupt) -> None:
        self.interrupt = interrupt

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        interrupt = self.interrupt
        if interrupt._lightning_sigterm is None:
            return
        signal.signal(signal.SIGTERM, interrupt._lightning_sigterm)
        interrupt._lightning_sigterm = None
        if interrupt._held or trainer.received_sigterm:
            raise SIGTERMException
