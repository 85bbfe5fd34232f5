"""The Lightning hooks that read the same in every family, written once: a family says what its evaluation computes
(`_evaluate`) and which pictures it shows (`previews`), and these call them."""

from __future__ import annotations

from typing import Any

from lightning.pytorch.callbacks import Callback


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

    def previews(self) -> list[Callback]:
        """The callbacks (`genlab/models/previews/`) showing the model while it trains; none unless the family says."""
        return []

    def configure_callbacks(self) -> list[Callback]:
        # Lightning's hook for callbacks that belong to a model rather than to a run: pictures of training only,
        # not of src.eval's test or a checkpoint's validation
        return self.previews() if self.trainer.state.fn == "fit" else []
