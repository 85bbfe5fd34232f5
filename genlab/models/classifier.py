"""Image classifier: the domain network behind this project's FID, KID and Inception-Score analogue."""

from __future__ import annotations

from typing import Annotated

import lightning as L
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor
from torchmetrics.classification import MulticlassAccuracy

from genlab.capabilities import MAX_STAGES, ImageShape
from genlab.models.compiling import Compile, compile_networks
from genlab.models.fused import fused_optimizer_available
from genlab.models.hooks import SharedHooks
from genlab.models.nets.classifier import ConvClassifier
from genlab.utils.validation import check_arguments


class Classifier(SharedHooks, L.LightningModule):
    """Cross-entropy training of a ConvClassifier; logs loss and accuracy per split."""

    def __init__(
        self,
        image_shape: ImageShape,
        num_classes: int,
        # None: by the image size (genlab/models/nets/classifier.py)
        channels: Annotated[tuple[Annotated[int, Field(ge=1)], ...], Field(max_length=MAX_STAGES)] | None = None,
        # ranges declared once: a config (genlab/utils/validation.py), a checkpoint and this constructor are checked
        # against them, and the message names the key
        feature_dim: Annotated[int, Field(ge=1)] = 64,
        dropout: Annotated[float, Field(ge=0, lt=1)] = 0.25,
        lr: Annotated[float, Field(gt=0)] = 2e-3,
        weight_decay: Annotated[float, Field(ge=0)] = 5e-4,
        compile: Compile = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(logger=False)
        check_arguments(Classifier, self.hparams, "model")
        self.net = ConvClassifier(image_shape, num_classes, channels, feature_dim, dropout)
        compile_networks(compile, self.net)
        # one metric object per split: torchmetrics accumulates over the epoch and syncs across ranks
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")

    def forward(self, images: Tensor) -> Tensor:
        return self.net(images)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        images, labels = batch
        logits = self.net(images)  # (B, num_classes)
        loss = F.cross_entropy(logits, labels)
        self.train_acc.update(logits, labels)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True, prog_bar=True)  # over the epoch
        self.log_training_values({"train/loss": loss})
        return loss

    def _evaluate(self, batch: tuple[Tensor, Tensor], batch_idx: int, split: str) -> None:
        images, labels = batch
        logits = self.net(images)
        accuracy = {"val": self.val_acc, "test": self.test_acc}[split]
        accuracy.update(logits, labels)
        self.log(f"{split}/acc", accuracy, on_step=False, on_epoch=True, prog_bar=True)
        # the mean over the epoch, across devices
        self.log(f"{split}/loss", F.cross_entropy(logits, labels), prog_bar=True, sync_dist=True)

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(
            self.parameters(),
            lr=self.hparams.lr,
            weight_decay=self.hparams.weight_decay,
            fused=fused_optimizer_available(self),
        )
        # one cosine cycle over the whole run, stepped per batch
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=self.hparams.lr, total_steps=self.trainer.estimated_stepping_batches
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
