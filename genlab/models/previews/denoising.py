"""Pictures of a model that samples in steps: samples from fixed noise, and the path each takes from noise to image."""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from genlab.capabilities import StepwiseSampler, require
from genlab.models.previews.image_grid import save_and_log_grid, tile_grid


class FixedNoiseSamples(Callback):
    """After each validation epoch, samples from the same fixed noise (and, for stochastic samplers, the same
    noise along the way), so that progress is comparable by eye: `samples` is the grid, and `trajectory` the
    denoising path x_T ... x_0 of the grid's first row, one image per row, `num_states` states across.

    One sampling run makes both pictures: on a CPU the sampling, not the drawing, is what costs.
    Works with any StepwiseSampler.
    """

    def __init__(self, num_images: int = 40, images_per_row: int = 8, num_states: int = 10, seed: int = 0) -> None:
        self.num_images = num_images
        self.images_per_row = images_per_row
        self.num_states = num_states
        self.seed = seed

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        require(pl_module, StepwiseSampler, type(self).__name__)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not self.num_images:
            return
        generator = torch.Generator().manual_seed(self.seed)  # on the CPU: the same draws on any device
        noise = torch.randn((self.num_images, *pl_module.noise_shape), generator=generator).to(pl_module.device)
        states = pl_module.denoising_trajectory(noise, self.num_states, generator=generator)  # (S, N, C, H, W)
        states = states.float().cpu()
        caption = (
            f"{self.num_images} samples from the same fixed noise at every validation, {self.images_per_row} per "
            "row: compare them by eye (a class-conditional model has one column per class)"
        )
        save_and_log_grid(trainer, "samples", tile_grid(states[-1], nrow=self.images_per_row), caption)
        rows = min(self.images_per_row, self.num_images)
        strip = states[:, :rows].transpose(0, 1).flatten(0, 1)  # (rows * S, C, H, W): image by image, noise first
        caption = (
            f"Each row: one sample of the grid's first row on its way from pure noise (left) to the image (right), "
            f"{len(states)} states evenly spaced over the sampler's steps"
        )
        save_and_log_grid(trainer, "trajectory", tile_grid(strip, nrow=len(states)), caption)
