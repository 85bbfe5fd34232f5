"""Build the lists of callbacks and loggers from their config groups."""

from __future__ import annotations

import logging

import hydra
from lightning.pytorch.loggers import Logger, WandbLogger
from omegaconf import DictConfig

log = logging.getLogger(__name__)


def instantiate_all(group: DictConfig | None, kind: str) -> list:
    """Instantiate every entry with a `_target_` in a group (callbacks or loggers); None entries are off."""
    built = []
    for name, node in (group or {}).items():
        if isinstance(node, DictConfig) and "_target_" in node:
            log.info(f"Instantiating {kind} <{node._target_}> ({name})")
            built.append(hydra.utils.instantiate(node, _convert_="all"))
    return built


def finish_loggers(loggers: list[Logger]) -> None:
    """Close W&B runs (so the next run of a sweep starts a new one) and say how to sync offline ones."""
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            run = logger.experiment
            offline = run.settings.mode == "offline"
            run.finish()
            if offline:
                log.info(f"W&B ran offline; to upload this run: wandb sync {run.settings.sync_dir}")
