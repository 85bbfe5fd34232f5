"""Normalizing flow (RealNVP, Dinh et al. 2017; Glow, Kingma & Dhariwal 2018): an invertible network from images to
Gaussian noise, trained by exact log-likelihood. Not flow matching (`model=diffusion model.objective=flow`)."""

from __future__ import annotations

import math
from typing import Annotated

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from pydantic import Field
from torch import Tensor

from genlab.capabilities import ImageShape
from genlab.models.fused import fused_optimizer_available
from genlab.models.hooks import SharedHooks
from genlab.models.likelihood import bits_per_dim, dequantize, dequantized_nll
from genlab.models.nets.coupling_flow import CouplingFlow
from genlab.models.nets.resolution import check_stages
from genlab.models.previews.image_grid import MAX_GRID_IMAGES
from genlab.models.previews.latent_grids import SampleGrid
from genlab.utils.validation import check_arguments


class NormalizingFlow(SharedHooks, L.LightningModule):
    """Images -> dequantized, logit-transformed -> CouplingFlow -> z ~ N(0, I); samples run the flow backwards.

    Logged per split: `loss` and `bpd`, the negative log-likelihood of the 8-bit images in bits per dimension (exact
    for the dequantized images, an upper bound on the discrete images' NLL), and `nll`, the same in nats per image.
    """

    # each range is declared once, here: a config (genlab/utils/validation.py), a checkpoint and this constructor are
    # checked against it, and the message names the key
    def __init__(
        self,
        image_shape: ImageShape,
        num_scales: Annotated[int, Field(ge=1)] | None = None,  # None: by the image size (nets/coupling_flow.py)
        coupling_layers: Annotated[int, Field(ge=1)] = 4,
        hidden_channels: Annotated[int, Field(ge=1)] = 64,
        actnorm: bool = True,
        logit_alpha: Annotated[float, Field(gt=0, lt=0.5)] = 0.05,
        sample_temperature: Annotated[float, Field(gt=0)] = 1.0,
        lr: Annotated[float, Field(gt=0)] = 1e-3,
        weight_decay: Annotated[float, Field(ge=0)] = 0.0,
        num_grid_images: Annotated[int, Field(ge=0, le=MAX_GRID_IMAGES)] = 64,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(logger=False)
        check_arguments(NormalizingFlow, self.hparams, "model")
        if num_scales is not None:  # spans two settings: not one annotation's to say
            check_stages(image_shape, num_scales, f"model.num_scales={num_scales}")
        self.flow = CouplingFlow(image_shape, num_scales, coupling_layers, hidden_channels, actnorm)

    @property
    def latent_dim(self) -> int:
        return math.prod(self.hparams.image_shape)  # a flow keeps every dimension

    @property
    def latent_shape(self) -> tuple[int]:
        return (self.latent_dim,)  # generate() takes the flat vector

    def to_logits(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """RealNVP's logit(alpha + (1 - 2 alpha) x) of x in [0, 1]^D (B, C, H, W), away from the infinite logits of 0
        and 1, and its log |det| (B,)."""
        alpha = self.hparams.logit_alpha
        p = alpha + (1 - 2 * alpha) * x
        logits = torch.log(p) - torch.log1p(-p)
        # d logit / dx = (1 - 2 alpha) / (p (1 - p)), per dimension
        log_det = (math.log(1 - 2 * alpha) - torch.log(p) - torch.log1p(-p)).flatten(1).sum(1)
        return logits, log_det

    def from_logits(self, logits: Tensor) -> Tensor:
        """The inverse of `to_logits` without the noise: images (B, C, H, W) in [0, 1]."""
        alpha = self.hparams.logit_alpha
        return ((torch.sigmoid(logits) - alpha) / (1 - 2 * alpha)).clamp(0, 1)

    def log_density(self, x: Tensor) -> Tensor:
        """log p(x) (B,) in nats of dequantized images x (B, C, H, W) on [0, 1]^D: change of variables through the
        logit and the flow, exactly."""
        logits, log_det_logits = self.to_logits(x)
        z, log_det_flow = self.flow(logits)
        log_pz = -0.5 * (z.pow(2) + math.log(2 * math.pi)).flatten(1).sum(1)  # log N(z; 0, I)
        return log_pz + log_det_flow + log_det_logits

    def bits_per_dim(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """-log2 p of each 8-bit image (B,), per dimension, on one draw of the dequantization noise (the training
        loss, and genlab/models/likelihood.py's scale that every family with a likelihood reports on)."""
        dims = images[0].numel()
        return bits_per_dim(dequantized_nll(self.log_density(dequantize(images, generator)), dims), dims)

    # --- LikelihoodModel: src.eval's likelihood/bpd ------------------------------------------------------
    likelihood_bound = "exact (change of variables), on dequantized images"

    @torch.no_grad()
    def nll_bits_per_dim(self, images: Tensor, importance_samples: int) -> Tensor:
        """The exact bits/dim of the dequantized images; a flow draws no importance samples."""
        return self.bits_per_dim(images)

    def generate(self, z: Tensor) -> Tensor:
        """Images (B, C, H, W) in [0, 1] for latents z (B, latent_dim): the flow run backwards."""
        return self.from_logits(self.flow.inverse(z.view(len(z), *self.flow.latent_shape)))

    def sample(self, num_samples: int) -> Tensor:
        """Images from z ~ N(0, T^2 I), T = `sample_temperature` (1: the model's own distribution)."""
        z = torch.randn(num_samples, self.latent_dim, device=self.device) * self.hparams.sample_temperature
        return self.generate(z)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        images, _ = batch
        loss = self.bits_per_dim(images).mean()
        self.log_training_values({"train/loss": loss})
        return loss

    def _evaluate(self, batch: tuple[Tensor, Tensor], batch_idx: int, split: str) -> None:
        images, _ = batch
        bpd = self.bits_per_dim(images).mean()
        nats = bpd * images[0].numel() * math.log(2)  # per image
        options = {"on_step": False, "on_epoch": True, "sync_dist": True}
        self.log(f"{split}/loss", bpd, prog_bar=True, **options)
        self.log_dict({f"{split}/bpd": bpd, f"{split}/nll": nats}, **options)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        hp = self.hparams
        return torch.optim.Adam(
            self.parameters(), lr=hp.lr, weight_decay=hp.weight_decay, fused=fused_optimizer_available(self)
        )

    def previews(self) -> list[Callback]:
        if not self.hparams.num_grid_images:
            return []
        return [SampleGrid(num_images=self.hparams.num_grid_images)]
