"""What genlab adds to Lightning's loggers: W&B without its deprecated argument, hyperparameters beside the final
metrics for TensorBoard's HParams tab, and the end of a run (W&B runs closed, offline runs' sync command)."""

from __future__ import annotations

import logging
from typing import Any

from lightning.pytorch import loggers
from lightning.pytorch.loggers import Logger, TensorBoardLogger

log = logging.getLogger(__name__)

# the config sections that tell runs apart in TensorBoard's HParams tab (all of it, ~165 keys, is in hparams.yaml)
HPARAM_SECTIONS = ("model", "data", "trainer", "seed")


class WandbLogger(loggers.WandbLogger):
    """Lightning's WandbLogger, less the `anonymous` argument that it passes to wandb.init on every run.

    wandb removed anonymous mode (wandb/wandb#10909) and now warns in every run that the setting has no effect.
    This reads Lightning's private `_wandb_init`: remove the class (conf/logger/wandb.yaml back to Lightning's)
    once Lightning stops passing `anonymous`.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._wandb_init.pop("anonymous", None)


def log_final_metrics(loggers_: list[Logger], config: dict[str, Any], metrics: dict[str, float], step: int) -> None:
    """Give TensorBoard the run's hyperparameters with its final metrics, as `final/<metric>`, so that its HParams
    tab compares the runs of a sweep by parameter (with hyperparameters alone, as logged at the start, the tab
    stays empty). Under their own names, as Lightning's docs do it (`hp/...`): logged again under the curves'
    names, they would add a point to every curve."""
    params = {key: config[key] for key in HPARAM_SECTIONS if key in config}
    final = {f"final/{name}": value for name, value in metrics.items()}
    for logger in loggers_:
        if isinstance(logger, TensorBoardLogger) and final:
            logger.log_hyperparams(params, metrics=final, step=step)


def finish_loggers(loggers_: list[Logger]) -> None:
    """Close W&B runs (so the next run of a sweep starts a new one) and say how to sync offline ones."""
    for logger in loggers_:
        if isinstance(logger, loggers.WandbLogger):
            run = logger.experiment
            offline = run.settings.mode == "offline"
            run.finish()
            if offline:
                log.info(f"W&B ran offline; to upload this run: wandb sync {run.settings.sync_dir}")
