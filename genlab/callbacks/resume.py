"""What a resumed run needs beyond Lightning's own restore to continue exactly as the unbroken run would."""

from __future__ import annotations

import random
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback

from genlab.utils.checkpoint_reader import CheckpointError


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


class ResumedStatesFit(Callback):
    """Refuse, in one line and before Lightning restores them, optimizer and scheduler states that are not those of
    the optimizers and schedulers this run builds: another optimizer's (torch takes them and fails inside the first
    step, with its own traceback), another number of them, of parameter groups or of parameters, states of other
    shapes. The weights are checked before any of this (genlab/checkpoints/resume.py, check_state_dict_fits)."""

    def __init__(self) -> None:
        self._saved: tuple[Any, Any] | None = None

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        # before the strategy's setup builds the optimizers: kept until on_fit_start, which follows it
        self._saved = (checkpoint.get("optimizer_states", []), checkpoint.get("lr_schedulers", []))

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._saved is None:
            return
        optimizer_states, scheduler_states = self._saved
        self._saved = None
        mismatch = optimizers_mismatch(optimizer_states, trainer.optimizers) or schedulers_mismatch(
            scheduler_states, [config.scheduler for config in trainer.lr_scheduler_configs]
        )
        if mismatch:
            raise CheckpointError(
                f"{trainer.ckpt_path}: {mismatch}; resume with the model options it was trained with, or start anew"
            )


def optimizers_mismatch(saved: Any, optimizers: list[torch.optim.Optimizer]) -> str:
    """How the saved optimizer states differ from those `optimizers` would load, in a few words ('' if they fit)."""
    if not isinstance(saved, list) or len(saved) != len(optimizers):
        return f"holds {_count(saved)} optimizer state(s), and this run has {len(optimizers)} optimizer(s)"
    for i, (state, optimizer) in enumerate(zip(saved, optimizers, strict=True)):
        name = f"optimizer {i} ({type(optimizer).__name__})"
        groups = state.get("param_groups") if isinstance(state, dict) else None
        if not isinstance(groups, list) or not isinstance(state.get("state"), dict):
            return f"its state of {name} is not an optimizer's state"
        if len(groups) != len(optimizer.param_groups):
            return f"its {name} has {len(groups)} parameter group(s), and this run's {len(optimizer.param_groups)}"
        params = [param for group in optimizer.param_groups for param in group["params"]]
        for g, (group, own) in enumerate(zip(groups, optimizer.param_groups, strict=True)):
            if not isinstance(group, dict) or len(group.get("params", ())) != len(own["params"]):
                return f"its {name}'s parameter group {g} holds other parameters than this run's"
            # another optimizer's settings (SGD's momentum in Adam's state); a newer torch's extra ones have defaults
            foreign = sorted(map(str, group.keys() - own.keys()))
            if foreign:
                return f"its {name} state is another optimizer's (settings {', '.join(foreign[:4])})"
        for index, values in state["state"].items():
            if not (isinstance(index, int) and 0 <= index < len(params) and isinstance(values, dict)):
                return f"its {name} state names a parameter {index!r} this run's optimizer does not have"
            shape = params[index].shape
            wrong = [key for key, value in values.items() if not _fits(value, shape)]
            if wrong:
                return f"its {name} state of parameter {index} ({', '.join(map(str, wrong[:3]))}) is not of its shape"
    return ""


def schedulers_mismatch(saved: Any, schedulers: list[Any]) -> str:
    """How the saved scheduler states differ from those `schedulers` would load ('' if they fit): torch loads any
    mapping into any scheduler, silently."""
    if not isinstance(saved, list) or len(saved) != len(schedulers):
        return f"holds {_count(saved)} learning-rate scheduler state(s), and this run has {len(schedulers)}"
    for i, (state, scheduler) in enumerate(zip(saved, schedulers, strict=True)):
        if not isinstance(state, dict) or state.keys() != scheduler.state_dict().keys():
            return f"its scheduler state {i} is not a {type(scheduler).__name__}'s"
    return ""


def _fits(value: Any, shape: torch.Size) -> bool:
    """A parameter's optimizer state: a tensor of its shape (Adam's moments), a scalar (the step), or a number."""
    if isinstance(value, torch.Tensor):
        return value.shape == shape or value.dim() == 0
    return isinstance(value, (int, float, bool)) or value is None


def _count(saved: Any) -> str:
    return str(len(saved)) if isinstance(saved, list) else "no list of"


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
