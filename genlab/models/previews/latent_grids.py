"""Pictures of a latent-variable model: samples from fixed noise, interpolations, the 2-D latent manifold.

Each works with any LatentDecoder; the interpolation also needs an ImageEncoder.
"""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor

from genlab.capabilities import ImageEncoder, LatentDecoder, require
from genlab.models.previews.image_grid import save_and_log_grid, tile_grid


class SampleGrid(Callback):
    """After each validation epoch, images generated from the same fixed noise: progress is comparable by eye."""

    def __init__(self, num_images: int = 64, images_per_row: int = 8, seed: int = 0) -> None:
        self.num_images = num_images
        self.images_per_row = images_per_row
        self.seed = seed

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        require(pl_module, LatentDecoder, type(self).__name__)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        generator = torch.Generator().manual_seed(self.seed)
        z = torch.randn(self.num_images, *pl_module.latent_shape, generator=generator).to(pl_module.device)
        with torch.no_grad():
            images = pl_module.generate(z)
        caption = (
            f"{self.num_images} images generated from the same fixed noise at every epoch, {self.images_per_row} "
            "per row: compare epochs by eye (a class-conditional model has one column per class)"
        )
        save_and_log_grid(trainer, "samples", tile_grid(images.float().cpu(), nrow=self.images_per_row), caption)


class LatentInterpolation(Callback):
    """Rows of decoded latents on the straight line between the posterior means of two validation images."""

    def __init__(self, num_pairs: int = 8, steps: int = 10) -> None:
        self.num_pairs = num_pairs
        self.steps = steps
        self.images: Tensor | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        require(pl_module, LatentDecoder, type(self).__name__)
        require(pl_module, ImageEncoder, type(self).__name__)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if self.images is None:  # the first batch: the same pairs every epoch
            self.images = batch[0][: 2 * self.num_pairs].detach()

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.images is None or len(self.images) < 2:
            return
        pairs = len(self.images) // 2
        with torch.no_grad():
            mu = pl_module.encode(self.images[: 2 * pairs])[0]  # (2P, *latent_shape)
            start, end = mu[:pairs], mu[pairs:]  # (P, *latent_shape) each
            weights = torch.linspace(0, 1, self.steps, device=mu.device)  # (S,)
            weights = weights.view(1, self.steps, *[1] * (mu.dim() - 1))  # (1, S, 1, ...)
            z = start[:, None] + weights * (end - start)[:, None]  # (P, S, *latent_shape)
            images = pl_module.generate(z.flatten(0, 1))  # (P*S, C, H, W)
        caption = (
            f"Each row: {self.steps} images decoded from evenly spaced points on the straight line between the "
            "latent means of two validation images, the first at the left, the second at the right"
        )
        save_and_log_grid(trainer, "interpolations", tile_grid(images.float().cpu(), nrow=self.steps), caption)


class LatentManifold(Callback):
    """For a 2-D latent space: decode a regular grid of z placed at equal probability steps of the prior.

    The grid's coordinates go through the inverse Gaussian CDF (as in Kingma & Welling 2014, Fig. 4),
    so every cell covers the same prior mass.
    """

    def __init__(self, size: int = 20) -> None:
        self.size = size

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        require(pl_module, LatentDecoder, type(self).__name__)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or tuple(pl_module.latent_shape) != (2,):
            return
        quantiles = torch.linspace(0.05, 0.95, self.size)
        coordinates = torch.distributions.Normal(0.0, 1.0).icdf(quantiles)  # (size,)
        # rows go down the second latent dimension, columns across the first
        z = torch.stack(torch.meshgrid(coordinates, coordinates.flip(0), indexing="xy"), dim=-1)  # (size, size, 2)
        with torch.no_grad():
            images = pl_module.generate(z.reshape(-1, 2).to(pl_module.device))
        caption = (
            f"The decoder over the 2-D latent space, {self.size}x{self.size} points at equal steps of prior "
            "probability: the first latent dimension grows to the right, the second grows upwards"
        )
        grid = tile_grid(images.float().cpu(), nrow=self.size, padding=0)
        save_and_log_grid(trainer, "manifold", grid, caption)
