"""Where a step stands in the run: whether its logged values reach the loggers (the other steps skip `self.log`),
and whether a validation is the run's last."""

from __future__ import annotations

import lightning as L
import torch
from torch import Tensor


def logs_this_step(trainer: L.Trainer) -> bool:
    """True during the training batches whose logged values the Trainer writes: every `log_every_n_steps`-th
    batch that steps the optimizers (Lightning's own rule), the batch that stops the run, and every batch under
    `fast_dev_run`.

    `self.log` costs about a third of a millisecond of bookkeeping per call on a CPU (`python -m
    benchmarks.log_cost`): the MLP VAE's five values on every step would add a quarter to its step time, for
    values that no logger writes. And a logged value shown in the progress bar is read on the host, which on a
    GPU waits for the step to finish: the other batches must log nothing.
    """
    if trainer.fast_dev_run or trainer.should_stop:
        return True
    if trainer.log_every_n_steps <= 0:
        return False
    # Lightning's count of the batches that stepped (once per batch, whatever the number of optimizers; the GAN's
    # global_step counts two): what its logger connector decides by. Private; Lightning has no public "will this
    # step's logs be written" (its `should_update_logs` is on the private logger connector). Replace with a
    # public property should Lightning add one.
    batch = trainer.fit_loop.epoch_loop._batches_that_stepped + 1
    return batch % trainer.log_every_n_steps == 0


def on_host(**values: Tensor) -> dict[str, Tensor]:
    """The step's values to log, copied to the host in one transfer: on a step that logs, one wait for the device.

    Lightning reads a logged value shown in the progress bar (`prog_bar=True`) on the host at the end of every
    batch until the epoch ends, not only on the batch that logged it: a device tensor there would make every
    later batch wait for the device too. A host tensor costs nothing to read again.
    """
    stacked = torch.stack([value.detach().float() for value in values.values()]).cpu()  # (num_values,)
    return dict(zip(values, stacked.unbind(), strict=True))


def is_last_validation(trainer: L.Trainer) -> bool:
    """True in a validation that no training follows: `trainer.validate`, or the last one of a fit (ValidateAtEnd's at
    max_steps, the one a stop request brings about, or the last epoch's)."""
    if trainer.state.fn != "fit":
        return True
    last_epoch = trainer.max_epochs is not None and 0 < trainer.max_epochs <= trainer.current_epoch + 1
    return trainer.should_stop or 0 < trainer.max_steps <= trainer.global_step or (last_epoch and trainer.is_last_batch)
