"""FID/KID of a generative model's samples, computed at the end of validation and logged (val/fid, ...)."""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from src.metrics.sample_quality import SampleQuality, load_feature_classifier


class SampleFID(Callback):
    """Score `num_samples` samples against the first `num_samples` validation images every `every_n_epochs`.

    A small budget (1,000 or so) is noisy but cheap, and enough to follow a run and to pick its
    best checkpoint (`monitor.metric=val/fid monitor.mode=min`). The model must have `sample(n)`.
    """

    def __init__(
        self,
        num_samples: int = 1000,
        batch_size: int = 250,
        every_n_epochs: int = 1,
        classifier_ckpt: str | None = None,
    ) -> None:
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.every_n_epochs = every_n_epochs
        self.classifier_ckpt = classifier_ckpt
        self.quality: SampleQuality | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if not hasattr(pl_module, "sample"):
            raise TypeError(f"SampleFID needs a model with sample(n); {type(pl_module).__name__} has none")
        classifier = load_feature_classifier(self.classifier_ckpt, trainer.datamodule.name)
        self.quality = SampleQuality(classifier, kid_subset_size=min(1000, self.num_samples))

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        quality = self.quality.to(pl_module.device)
        if not quality.fid.real_features_num_samples:  # real statistics once: the validation set does not change
            for images in _first_images(trainer.datamodule.val_dataloader(), self.num_samples):
                quality.update(images.to(pl_module.device), real=True)
        quality.reset_generated()
        for start in range(0, self.num_samples, self.batch_size):
            with torch.no_grad():
                quality.update(pl_module.sample(min(self.batch_size, self.num_samples - start)), real=False)
        scores = quality.compute()
        # computed identically on every rank (same samples per rank is fine for a monitoring metric)
        pl_module.log_dict({f"val/{name}": scores[name] for name in ("fid", "kid", "is")}, sync_dist=True)


def _first_images(loader, count: int):
    seen = 0
    for images, _ in loader:
        yield images[: count - seen]
        seen += len(images)
        if seen >= count:
            return
