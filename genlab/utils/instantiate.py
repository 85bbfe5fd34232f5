"""Build objects from config nodes: one at a time, or the lists of callbacks and loggers."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import hydra
from hydra.errors import InstantiationException
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from omegaconf import DictConfig

from genlab.errors import ConfigError, GenlabError, one_line

log = logging.getLogger(__name__)


def instantiate(node: DictConfig | dict, key: str = "", **kwargs):
    """hydra.utils.instantiate (to plain containers), letting the user's errors through as one line.

    Hydra wraps whatever a constructor raises in an InstantiationException with a traceback; a
    GenlabError (`model.n_embd=100 must be divisible by model.n_head=3`) is the user's to fix and is re-raised
    unwrapped, and so is Lightning's word for a setting it cannot use (`trainer.max_epochs=-5`, a checkpoint `mode`
    that is neither min nor max), as a ConfigError naming the config node `key`.
    """
    try:
        return hydra.utils.instantiate(node, _convert_="all", **kwargs)
    except InstantiationException as err:
        if isinstance(err.__cause__, GenlabError):
            raise err.__cause__ from None
        if isinstance(err.__cause__, MisconfigurationException):
            raise ConfigError(f"{key or node.get('_target_')}: {one_line(err.__cause__)}") from None
        raise


@contextlib.contextmanager
def lightning_config_errors(what: str) -> Iterator[None]:
    """Within a Trainer call: Lightning's word for settings that do not go together (a LearningRateMonitor
    with no logger) as a ConfigError, one line, like the constructors' errors above."""
    try:
        yield
    except MisconfigurationException as err:
        raise ConfigError(f"{what}: {one_line(err)}") from None


def instantiate_all(group: DictConfig | None, kind: str) -> list:
    """Instantiate every entry with a `_target_` in a group (callbacks or loggers); None entries are off."""
    built = []
    for name, node in (group or {}).items():
        if isinstance(node, DictConfig) and "_target_" in node:
            log.info(f"Instantiating {kind} <{node._target_}> ({name})")
            built.append(instantiate(node, key=f"{kind}s.{name}"))
    return built
