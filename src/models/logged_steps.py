"""Where a step stands in the run, read from the Trainer's public state: whether its logged values reach the loggers
(the other steps skip `self.log`), and whether a validation is the run's last."""

from __future__ import annotations

import lightning as L


def logs_this_step(trainer: L.Trainer) -> bool:
    """True on the training steps whose values the Trainer writes: every `log_every_n_steps`, the step that
    stops the run, and every step under `fast_dev_run` (Lightning's own writer's rule, read from public state).

    `self.log` costs about a third of a millisecond of bookkeeping per call on a CPU (`python -m
    benchmarks.log_cost`): the MLP VAE's five values on every step would add a quarter to its step time,
    for values that no logger writes.
    """
    step = trainer.global_step + 1  # the step being taken
    return bool(trainer.fast_dev_run) or trainer.should_stop or step % max(1, trainer.log_every_n_steps) == 0


def is_last_validation(trainer: L.Trainer) -> bool:
    """True in a validation that no training follows: `trainer.validate`, or the last one of a fit (ValidateAtEnd's at
    max_steps, the one a stop request brings about, or the last epoch's)."""
    if trainer.state.fn != "fit":
        return True
    last_epoch = trainer.max_epochs is not None and 0 < trainer.max_epochs <= trainer.current_epoch + 1
    return trainer.should_stop or 0 < trainer.max_steps <= trainer.global_step or (last_epoch and trainer.is_last_batch)
