"""Image grids saved as PNG files in the run folder and shown by every logger that shows images."""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only
from PIL.PngImagePlugin import PngInfo
from torch import Tensor
from torch.nn.functional import interpolate
from torchvision.transforms.functional import to_pil_image
from torchvision.utils import make_grid

from genlab.capabilities import Denoiser, Reconstructor, require
from genlab.models.previews import CAPTION_KEY
from genlab.utils.files import replaced_atomically

# Tiles are drawn at least this many pixels high and wide: a 28x28 digit shown 1:1 is a smudge on a
# modern screen. Enlarged by a whole factor, nearest neighbour, so every pixel stays a sharp square.
MIN_TILE_SIZE = 56
# the most images a family's training grid may show (its num_grid_images): drawn, or generated, at every validation,
# and illegible long before this many
MAX_GRID_IMAGES = 1024


def tile_grid(images: Tensor, nrow: int, padding: int = 2) -> Tensor:
    """torchvision's make_grid of `images` (N, C, H, W) in [0, 1], each tile enlarged to >= MIN_TILE_SIZE."""
    factor = math.ceil(MIN_TILE_SIZE / min(images.shape[-2:]))
    if factor > 1:
        images = interpolate(images, scale_factor=factor, mode="nearest")  # (N, C, factor*H, factor*W)
    return make_grid(images, nrow=nrow, padding=padding)


def logger_step(trainer: L.Trainer) -> int:
    """The step at which the Trainer's loggers put the values logged now: a picture logged there sits beside the
    validation scalars it belongs to (at `trainer.global_step` it would sit one step later, and, for the GAN's
    two optimizers, at twice the step).

    Lightning logs at its count of batches that stepped, one behind `global_step` during a validation in fit and
    half of it under manual optimization with two optimizers (Lightning-AI/pytorch-lightning#13752, #17958), and
    keeps the count private: read as its own LearningRateMonitor reads it. Use a public step once Lightning has one.
    """
    return trainer.fit_loop.epoch_loop._batches_that_stepped


@rank_zero_only
def save_and_log_grid(trainer: L.Trainer, name: str, grid: Tensor, caption: str) -> Path:
    """Write `grid` (3, H, W) in [0, 1] to <run>/images/<name>_epochNNN.png and send it to the loggers.

    `caption` says what the rows and columns are; it goes into the PNG file itself (a text chunk), so the
    picture keeps its explanation wherever it is copied, and to W&B beside the image.
    """
    path = Path(trainer.default_root_dir) / "images" / f"{name}_epoch{trainer.current_epoch:03d}.png"
    metadata = PngInfo()
    metadata.add_text(CAPTION_KEY, caption)
    # rounded to 8 bits as torchvision's save_image does, which cannot pass PNG metadata on
    picture = to_pil_image(grid.mul(255).add(0.5).clamp(0, 255).to(torch.uint8))
    with replaced_atomically(path, "wb", "the picture") as file:
        picture.save(file, format="png", pnginfo=metadata)
    step = logger_step(trainer)
    for logger in trainer.loggers:  # CSV cannot show images; these two can
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(name, grid, global_step=step)
        elif isinstance(logger, WandbLogger):
            logger.log_image(key=name, images=[grid], step=step, caption=[caption])
    return path


class ReconstructionGrid(Callback):
    """After each validation epoch: bands of validation images, (noisy inputs,) and reconstructions.

    Works with any Reconstructor; a Denoiser (a denoising autoencoder) gets a row of its corrupted
    inputs as well. Each band holds one row of each, its reconstructions right below its inputs; a grey
    line separates the bands. The images are the first `num_images` of the validation set, the same
    every epoch.
    """

    SEPARATOR_SIZE = 4  # pixels of the grey line between bands
    SEPARATOR_VALUE = 0.5  # visible against black (MNIST) and white backgrounds alike

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
        # (P, n, C, H, W) -> bands of `per_row` images, panel after panel: input row, then its reconstruction row
        stacked = torch.stack([panel[:n] for panel in panels]).unflatten(1, (n // per_row, per_row))
        # each band (P, per_row, C, H, W) -> a grid of P rows; the bands then stacked with a line between each two
        bands = [tile_grid(band.flatten(0, 1).float().cpu(), nrow=per_row) for band in stacked.transpose(0, 1)]
        separator = torch.full((3, self.SEPARATOR_SIZE, bands[0].shape[-1]), self.SEPARATOR_VALUE)
        grid = torch.cat([part for band in bands for part in (separator, band)][1:], dim=1)  # (3, H, W)
        rows = (
            "top row: validation images; middle: their corrupted inputs; bottom"
            if len(panels) == 3
            else "top row: validation images; below"
        )
        caption = f"Each band between grey lines: {rows}: their reconstructions."
        save_and_log_grid(trainer, "reconstructions", grid, caption)
