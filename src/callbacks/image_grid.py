"""Image grids saved as PNG files in the run folder and shown by every logger that shows images."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only
from torch import Tensor
from torchvision.utils import make_grid, save_image

from src.models.capabilities import Denoiser, Reconstructor, require


@rank_zero_only
def save_and_log_grid(trainer: L.Trainer, name: str, grid: Tensor) -> Path:
    """Write `grid` (3, H, W) in [0, 1] to <run>/images/<name>_epochNNN.png and send it to the loggers."""
    path = Path(trainer.default_root_dir) / "images" / f"{name}_epoch{trainer.current_epoch:03d}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(grid, path)
    for logger in trainer.loggers:  # CSV cannot show images; these two can
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(name, grid, global_step=trainer.global_step)
        elif isinstance(logger, WandbLogger):
            logger.log_image(key=name, images=[grid], step=trainer.global_step)
    return path


class ReconstructionGrid(Callback):
    """After each validation epoch: rows of validation images, (noisy inputs,) and reconstructions.

    Works with any Reconstructor; a Denoiser (a denoising autoencoder) gets a row of its corrupted
    inputs as well.
    The images are the first `num_images` of the validation set, the same every epoch.
    """

    def __init__(self, num_images: int = 32, images_per_row: int = 8) -> None:
        self.num_images = num_images
        self.images_per_row = images_per_row
        self.images: Tensor | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        require(pl_module, Reconstructor, type(self).__name__)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if self.images is None or len(self.images) < self.num_images:
            seen = [] if self.images is None else [self.images]
            self.images = torch.cat(seen + [batch[0].detach()])[: self.num_images]

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.images is None:
            return
        with torch.no_grad():
            inputs = pl_module.corrupt(self.images) if isinstance(pl_module, Denoiser) else self.images
            panels = [self.images] + ([inputs] if inputs is not self.images else []) + [pl_module.reconstruct(inputs)]
        n = len(self.images) - len(self.images) % self.images_per_row or len(self.images)
        per_row = min(self.images_per_row, n)
        # (P, n, C, H, W) -> rows of `per_row` images, panel after panel: input row, then its reconstruction row
        stacked = torch.stack([panel[:n] for panel in panels]).unflatten(1, (n // per_row, per_row))
        rows = stacked.transpose(0, 1).flatten(0, 2)  # (n/per_row * P * per_row, C, H, W)
        save_and_log_grid(trainer, "reconstructions", make_grid(rows.float().cpu(), nrow=per_row, padding=2))
