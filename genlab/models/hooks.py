"""The Lightning hooks that read the same in every family, written once: a family says what its evaluation computes
(`_evaluate`) and which pictures it shows (`previews`), and these call them; and how a training step logs
(`log_training_values`), so that a family's `training_step` reads as its loss; and `trainer.gradient_clip_val`
under a fused optimizer."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any

from lightning.pytorch.callbacks import Callback
from torch import Tensor

from genlab.models.fused import clip_gradients
from genlab.models.logged_steps import logs_this_step, on_host


class SharedHooks:
    """Mixin for a family's LightningModule: `validation_step` and `test_step` run its `_evaluate` on the batch,
    and `configure_callbacks` returns its `previews` while fitting only. Listed before L.LightningModule among
    the bases, so that its hooks are the ones Lightning calls. It adds no weights: checkpoints are unchanged."""

    def _evaluate(self, batch: Any, batch_idx: int, split: str) -> None:
        """Compute and log the split's metrics (`val/...`, `test/...`) on one batch: the family's own."""
        raise NotImplementedError(f"{type(self).__name__} must define _evaluate(batch, batch_idx, split)")

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluate(batch, batch_idx, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluate(batch, batch_idx, "test")

    def log_training_values(
        self,
        values: Mapping[str, Tensor] | Callable[[], Mapping[str, Tensor]],
        prog_bar: Collection[str] = ("train/loss",),
        on_epoch: bool = False,
    ) -> None:
        """Log a training step's `values` ({"train/loss": loss}) on the batches whose logs the Trainer writes
        (`logs_this_step`), copied to the host in one transfer (`on_host`); nothing on the others. `values` may be a
        function giving them, for values that cost work of their own (the GAN's discriminator accuracies): called
        on those batches only. `prog_bar`: the names the progress bar shows; `on_epoch`: means over the epoch
        too (of the logged batches)."""
        if not logs_this_step(self.trainer):
            return
        logged = on_host(**(values() if callable(values) else values))
        for name, value in logged.items():
            self.log(name, value, on_step=True, on_epoch=on_epoch, prog_bar=name in prog_bar)

    def configure_gradient_clipping(
        self, optimizer: Any, gradient_clip_val: float | None = None, gradient_clip_algorithm: str | None = None
    ) -> None:
        # trainer.gradient_clip_val through fused.clip_gradients: Lightning refuses to clip under a fused optimizer
        # even in bf16-mixed, where there is nothing to unscale (every family steps a maybe-fused Adam)
        if gradient_clip_val:
            clip_gradients(self, optimizer, gradient_clip_val, gradient_clip_algorithm or "norm")

    def previews(self) -> list[Callback]:
        """The callbacks (`genlab/models/previews/`) showing the model while it trains; none unless the family says."""
        return []

    def configure_callbacks(self) -> list[Callback]:
        # Lightning's hook for callbacks that belong to a model rather than to a run: pictures of training only,
        # not of src.eval's test or a checkpoint's validation
        return self.previews() if self.trainer.state.fn == "fit" else []
