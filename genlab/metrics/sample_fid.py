"""FID, KID, IS, precision and recall of a generative model's samples, computed at the end of validation and logged
(val/fid, ...)."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from genlab.capabilities import ImageSampler, require
from genlab.metrics.features import feature_space
from genlab.metrics.reference import ReferenceStatistics, reference_images, reference_statistics
from genlab.metrics.sample_quality import SampleQuality

log = logging.getLogger(__name__)


class SampleFID(Callback):
    """Score `num_samples` samples against the first `num_samples` validation images every `every_n_epochs`, in
    `feature`'s space (as src.eval's metrics.feature); the validation images' statistics are computed once, into
    `statistics_dir`, and read from there by every later run and sweep trial.

    A small budget (1,000 or so) is noisy but cheap, and enough to follow a run and to pick its
    best checkpoint (`monitor.metric=val/fid monitor.mode=min`). The model must be an ImageSampler.

    Also logs val/label_entropy, the spread of the samples over the classifier's classes, and warns of
    mode collapse when it falls below `min_label_entropy` nats (ln 10 = 2.30 is ten classes alike;
    ln 3 = 1.10 is three; a GAN that collapses onto one garment drops towards 0).
    """

    # logged at validation ends after the sanity check (see RequireMonitoredMetric)
    logged_metrics = ("val/fid", "val/kid", "val/is", "val/precision", "val/recall", "val/label_entropy")

    def __init__(
        self,
        num_samples: int = 1000,
        batch_size: int = 250,
        every_n_epochs: int = 1,
        feature: str = "classifier",
        classifier_ckpt: str | None = None,
        inception_weights: str | None = None,
        statistics_dir: str = "outputs/statistics",
        min_label_entropy: float | None = 1.0,
    ) -> None:
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.every_n_epochs = every_n_epochs
        self.feature = feature
        self.classifier_ckpt = classifier_ckpt
        self.inception_weights = inception_weights
        self.statistics_dir = Path(statistics_dir)
        self.min_label_entropy = min_label_entropy
        self.quality: SampleQuality | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        require(pl_module, ImageSampler, type(self).__name__)
        datamodule = trainer.datamodule
        features = feature_space(
            self.feature, datamodule.name, datamodule.image_shape, self.classifier_ckpt, self.inception_weights
        )
        self.quality = SampleQuality(features, kid_subset_size=min(1000, self.num_samples))

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        quality = self.quality.to(pl_module.device)
        # Under DDP each process scores its share of the samples, and torchmetrics gathers their features across
        # processes: num_samples generated images in all, none counted twice.
        rank, world_size = trainer.global_rank, trainer.world_size
        share = range(rank, self.num_samples, world_size)  # this process's sample indices
        if quality.reference is None:  # once: the validation set does not change
            quality.reference = self._reference(trainer)
        quality.reset_generated()
        devices = [pl_module.device] if pl_module.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):  # the training stream is left as it was
            if world_size > 1:  # every process starts from the same seed: without this they draw the same samples
                torch.manual_seed(torch.initial_seed() + rank)
            for start in range(0, len(share), self.batch_size):
                with torch.no_grad():
                    quality.update(pl_module.sample(min(self.batch_size, len(share) - start)), real=False)
        scores = quality.compute()
        logged = {name: scores[name.removeprefix("val/")] for name in self.logged_metrics if name[4:] in scores}
        pl_module.log_dict(logged, sync_dist=True)  # label_entropy: in a classifier's features only
        entropy = scores.get("label_entropy", math.inf)
        if self.min_label_entropy is not None and entropy < self.min_label_entropy and trainer.is_global_zero:
            classes = quality.features.num_classes
            log.warning(
                f"Possible mode collapse at epoch {trainer.current_epoch}, step {trainer.global_step}: the "
                f"{self.num_samples} samples spread over the classifier's classes with entropy {entropy:.2f} nats "
                f"(below min_label_entropy={self.min_label_entropy}; {math.log(classes):.2f} is all {classes} "
                f"classes alike), like {math.exp(entropy):.1f} equally common classes"
            )

    def _reference(self, trainer: L.Trainer) -> ReferenceStatistics:
        """The first num_samples validation images' statistics, from their file: the first process computes and
        writes it where there is none, the others read it."""
        datamodule = trainer.datamodule
        images = reference_images(datamodule, "val")[: self.num_samples]

        def statistics() -> ReferenceStatistics:
            return reference_statistics(
                self.quality.features, images, datamodule.name, "val", self.statistics_dir, self.batch_size
            )

        reference = statistics() if trainer.is_global_zero else None
        trainer.strategy.barrier("reference statistics")
        return reference if reference is not None else statistics()
