"""Convolutional autoencoder: images -> `latent_dim` vector -> images; optionally denoising."""

from __future__ import annotations

from typing import Annotated, Literal

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from pydantic import Field
from torch import Tensor

from genlab.capabilities import ImageShape, Stages
from genlab.models.compiling import Compile, compile_networks
from genlab.models.fused import fused_optimizer_available
from genlab.models.hooks import SharedHooks
from genlab.models.nets.conv import ConvDecoder, ConvEncoder
from genlab.models.previews.image_grid import MAX_GRID_IMAGES, ReconstructionGrid
from genlab.utils.validation import check_arguments


class Autoencoder(SharedHooks, L.LightningModule):
    """Compresses images to a latent vector and reconstructs them.

    With `noise` set, the encoder sees corrupted images and the loss compares the reconstruction
    with the clean ones: a denoising autoencoder (Vincent et al., 2008). Validation and test
    corrupt their inputs the same way, so their losses measure the denoising task as well.
    """

    # each range is declared once, here: a config (genlab/utils/validation.py), a checkpoint and this constructor are
    # checked against it, and the message names the key
    def __init__(
        self,
        image_shape: ImageShape,
        latent_dim: Annotated[int, Field(ge=1)] = 32,
        # None: by the image size (genlab/models/nets/conv.py's `stages`)
        channels: Stages | None = None,
        loss: Literal["bce", "mse"] = "bce",
        noise: Literal["none", "gaussian", "masking"] = "none",
        noise_level: Annotated[float, Field(ge=0, le=1)] = 0.3,
        lr: Annotated[float, Field(gt=0)] = 1e-3,
        weight_decay: Annotated[float, Field(ge=0)] = 0.0,
        num_grid_images: Annotated[int, Field(ge=1, le=MAX_GRID_IMAGES)] = 32,
        compile: Compile = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(logger=False)  # train.py logs the whole config instead
        check_arguments(Autoencoder, self.hparams, "model")
        self.encoder = ConvEncoder(image_shape, latent_dim, channels)
        self.decoder = ConvDecoder(image_shape, latent_dim, channels)
        compile_networks(compile, self.encoder, self.decoder)

    def reconstruct(self, images: Tensor) -> Tensor:
        """Reconstructions (B, C, H, W) in [0, 1] of images as given (a denoiser's callers corrupt them first)."""
        return torch.sigmoid(self.decoder(self.encoder(images)))

    def corrupt(self, images: Tensor) -> Tensor:
        """The encoder's input in training: the images themselves, or with Gaussian or masking noise."""
        level = self.hparams.noise_level
        if self.hparams.noise == "gaussian":
            return (images + level * torch.randn_like(images)).clamp(0.0, 1.0)
        if self.hparams.noise == "masking":  # each pixel set to 0 with probability `level`
            return images * (torch.rand_like(images) >= level)
        return images

    def _loss(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """The loss of reconstructing the clean images from corrupted ones, and the reconstructions' logits."""
        logits = self.decoder(self.encoder(self.corrupt(images)))  # (B, C, H, W)
        if self.hparams.loss == "bce":  # Bernoulli likelihood of [0, 1] intensities, per pixel
            return F.binary_cross_entropy_with_logits(logits, images), logits
        return F.mse_loss(torch.sigmoid(logits), images), logits

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        images, _ = batch  # labels are not used
        loss, _ = self._loss(images)
        self.log_training_values({"train/loss": loss})
        return loss

    def _evaluate(self, batch: tuple[Tensor, Tensor], batch_idx: int, split: str) -> None:
        images, _ = batch
        loss, logits = self._loss(images)
        self.log(f"{split}/loss", loss, prog_bar=True, sync_dist=True)  # means over the epoch, across devices
        if self.hparams.loss != "mse":  # MSE in any case, comparable across loss choices
            self.log(f"{split}/mse", F.mse_loss(torch.sigmoid(logits), images), sync_dist=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        hp = self.hparams
        return torch.optim.AdamW(
            self.parameters(), lr=hp.lr, weight_decay=hp.weight_decay, fused=fused_optimizer_available(self)
        )

    def previews(self) -> list[Callback]:
        return [ReconstructionGrid(num_images=self.hparams.num_grid_images)]
