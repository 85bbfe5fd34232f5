"""Stop a run whose training loss or weights turn NaN or infinite, before it writes a checkpoint of the bad state."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor
from torch.distributed.tensor import DTensor

from genlab.errors import GenlabError
from genlab.models.logged_steps import logs_this_step


class NonFiniteLossError(GenlabError):
    """The training loss became NaN or infinite."""


class StopOnNonFiniteLoss(Callback):
    """Track whether each step's loss is finite, and stop with a clear error at the first one that is not.

    The test runs on the device (no synchronisation per step); the flag is read on the batches whose logs
    are written (every `trainer.log_every_n_steps`, genlab/models/logged_steps.py), before every validation and
    end of epoch, and as any checkpoint is put together (periodic ones come between those), so that no
    checkpoint of the bad state is written: neither last.ckpt nor a "best".
    """

    def __init__(self) -> None:
        self.first_bad_step: Tensor | None = None  # -1 while every loss is finite
        self.step = 0

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, idx: int) -> None:
        self.step = trainer.global_step  # the step whose loss comes next (on_train_batch_end sees it incremented)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        if not isinstance(loss, Tensor):
            return
        if self.first_bad_step is None:
            self.first_bad_step = torch.tensor(-1, device=loss.device)
        bad_now = ~torch.isfinite(loss.detach()).all() & (self.first_bad_step < 0)
        # a Python scalar, not a new device tensor: no host-to-device copy on this per-step path
        self.first_bad_step = torch.where(bad_now, self.step, self.first_bad_step)
        if logs_this_step(trainer):  # the batches whose logged values are read on the host anyway
            self._check(trainer)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._check(trainer)
            # a step whose loss was finite can still make the weights infinite (a learning rate of 1e300), and a
            # validation's pictures and text samples of such a model crash (a sampler's NaN probabilities). Not
            # sharded weights (trainer=fsdp): a shard's own verdict would stop one process and leave the others
            # waiting for it; their checkpoint's full weights are checked as it is saved
            parameters = list(pl_module.named_parameters())
            if not any(isinstance(tensor, DTensor) for _, tensor in parameters):
                self._check_weights(trainer, parameters)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._check(trainer)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        # before anything is written, so that the previous checkpoint stays the last one: the loss, and the
        # weights themselves (an infinite learning rate turns them NaN in one step whose loss was finite)
        self._check(trainer)
        self._check_weights(trainer, checkpoint["state_dict"].items())

    def _check_weights(self, trainer: L.Trainer, named: Iterable[tuple[str, Tensor]]) -> None:
        floating = [(name, tensor.detach()) for name, tensor in named if tensor.is_floating_point()]
        if not floating or torch.stack([torch.isfinite(tensor).all() for _, tensor in floating]).all():
            return  # one read on the host
        bad = [name for name, tensor in floating if not torch.isfinite(tensor).all()]
        last = trainer.checkpoint_callback.last_model_path if trainer.checkpoint_callback else ""
        raise NonFiniteLossError(
            f"weights became NaN or infinite by step {trainer.global_step} ({', '.join(bad[:3])}); stopped without "
            f"saving them. Last good checkpoint: {last or 'none yet'}. Lower the learning rate or clip gradients."
        )

    def _check(self, trainer: L.Trainer) -> None:
        if self.first_bad_step is None or (step := int(self.first_bad_step.item())) < 0:
            return
        last = trainer.checkpoint_callback.last_model_path if trainer.checkpoint_callback else ""
        raise NonFiniteLossError(
            f"the training loss became NaN or infinite at step {step} (noticed at step {trainer.global_step}); "
            f"stopped without saving this state. Last good checkpoint: {last or 'none yet'}. "
            f"Lower model.lr, clip gradients (trainer.gradient_clip_val=1.0) or use trainer.precision=32."
        )
