"""When a training step's logged values reach the loggers, so that the other steps can skip `self.log`."""

from __future__ import annotations

import lightning as L


def is_logged_step(module: L.LightningModule) -> bool:
    """True on the training steps whose values the Trainer writes (every `trainer.log_every_n_steps`).

    `self.log` costs about half a millisecond of bookkeeping per call on a CPU, which is several
    percent of a small model's step; the values of the other steps are never written anyway.
    Lightning's own LearningRateMonitor asks the Trainer the same way.
    """
    return module.trainer._logger_connector.should_update_logs
