"""Which training steps' logged values reach the loggers, so that the other steps can skip `self.log`."""

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
