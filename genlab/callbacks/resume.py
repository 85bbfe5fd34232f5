"""What a resumed run needs beyond Lightning's own restore to continue exactly as the unbroken run would."""

from __future__ import annotations

import random
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback


class ExactResume(Callback):
    """Make a resumed run draw the same numbers and see the same batches as the run it continues.

    - The Python, NumPy and torch (CPU and CUDA) generators are saved in each checkpoint and restored
      at the start of training (Lightning saves none of them).
    - The training dataloader's position (genlab/data/batching.py) is restored even when the model asked
      for `trainer.estimated_stepping_batches` while configuring its optimizers: that builds the loader
      before Lightning restores the checkpoint's loop state, and Lightning then never hands the loader
      its saved state, so a mid-epoch resume would start the epoch's batches over.
    - Validation, and the sanity check before training, run on a copy of the generators: what they
      draw (a VAE's posterior samples, sample grids, FID batches, text samples) is given back at their
      end. So the training stream does not depend on when or whether validation runs, and a checkpoint
      written on either side of a validation resumes the same stream.

    Data order is the dataloaders' own generator, saved with their state by Lightning.
    """

    def __init__(self) -> None:
        self._before_validation: dict[str, Any] | None = None
        self._to_restore: dict[str, Any] | None = None

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._before_validation = rng_states()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        set_rng_states(self._before_validation)  # before ModelCheckpoint's hook: Lightning runs checkpoints last
        self._before_validation = None

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        # during a validation (a signal's checkpoint), the states training continues from are the ones it began with
        checkpoint["rng_states"] = self._before_validation or rng_states()

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        self._to_restore = checkpoint.get("rng_states")  # checkpoints of other tools have none: nothing to restore

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        fit_loop = trainer.fit_loop
        # Lightning's private loop state (see the class docstring): the only way to hand the loader its saved
        # position. Lightning issue #20550, fixed by PR #21765 (not merged when this was written); once genlab
        # requires a Lightning release with the fix, these lines find no pending state and can go
        # (tests/test_resume.py tells whether a mid-epoch resume is still exact without them).
        if fit_loop._combined_loader_states_to_load:  # Lightning #20550
            fit_loop._load_combined_loader_states()  # Lightning #20550
            iter(fit_loop._data_fetcher)  # a new iterator, from the restored position (Lightning #20550)
        # here, not on load: the sanity check and model setup that follow loading must not draw on them
        if self._to_restore is not None:
            set_rng_states(self._to_restore)
            self._to_restore = None


def rng_states() -> dict[str, Any]:
    """The generators' states as tensors and plain values: what `torch.load(weights_only=True)` accepts."""
    kind, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    states = {
        "python": random.getstate(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.copy()),
            "position": position,
            "has_gauss": has_gauss,
            "cached_gaussian": cached_gaussian,
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    random.setstate(states["python"])
    numpy = states["numpy"]
    np.random.set_state(
        (numpy["kind"], numpy["keys"].numpy(), numpy["position"], numpy["has_gauss"], numpy["cached_gaussian"])
    )
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
