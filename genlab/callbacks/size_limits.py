"""The size limits on a network that a model builds once it has seen the data (configure_model)."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.model_helpers import is_overridden

from genlab.errors import ConfigError
from genlab.utils.model_size import ModelTooLarge, SizeLimits, built_within


class LazyNetworkLimits(Callback):
    """Hold a network built in `configure_model` to the limits that src.train holds the rest of the model to
    (genlab/train.py's check_model_size), before it exists: the GPT's size follows its vocabulary, which its
    `setup` takes from the data. At setup (after the data's, before the model's), a copy of the model is set up
    and configured on the meta device, counted as it is built, and refused past the limits in one line."""

    def __init__(self, limits: SizeLimits) -> None:
        self.limits = limits

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if not is_overridden("configure_model", pl_module):
            return

        def configured_copy() -> L.LightningModule:
            copy = type(pl_module)(**pl_module.hparams)  # genlab's families save every argument as a hyperparameter
            copy.trainer = trainer  # what its setup reads the data from
            copy.setup(stage)
            copy.configure_model()
            return copy

        try:
            built_within(self.limits, configured_copy)
        except ModelTooLarge as err:
            name = type(pl_module).__name__
            raise ConfigError(f"model: the {name} of these settings and this data {err}") from None
