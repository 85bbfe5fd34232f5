"""Sample from a checkpoint: `python -m src.sample ckpt_path=... num_samples=64`.

Needs only the checkpoint (its config rebuilds the model), not the dataset. Image models write a
grid of samples, samples.png, to the run folder.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import hydra
import lightning as L
import torch
from omegaconf import DictConfig
from torchvision.utils import save_image

from src.errors import ConfigError, exit_on_user_error
from src.utils.checkpoint import load_checkpoint, model_from_checkpoint

log = logging.getLogger(__name__)


def sample(cfg: DictConfig) -> Path:
    """Generate `num_samples` samples and write them to the run folder; return the file written."""
    model = model_from_checkpoint(load_checkpoint(cfg.ckpt_path))
    if not hasattr(model, "sample"):
        raise ConfigError(
            f"{cfg.ckpt_path}: a {type(model).__name__} does not generate samples (it has no sample method); "
            f"evaluate it with: python -m src.eval ckpt_path={cfg.ckpt_path}"
        )
    if cfg.num_samples < 1:
        raise ConfigError(f"num_samples must be >= 1, got {cfg.num_samples}")
    L.seed_everything(cfg.seed)
    device = torch.device("cuda" if cfg.accelerator != "cpu" and torch.cuda.is_available() else "cpu")
    with torch.no_grad():
        images = model.to(device).sample(cfg.num_samples)  # (N, C, H, W) in [0, 1]

    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / "samples.png"
    save_image(images, path, nrow=cfg.nrow or math.ceil(math.sqrt(cfg.num_samples)))
    log.info(f"Wrote {cfg.num_samples} samples to {path}")
    return path


@hydra.main(version_base="1.3", config_path="../conf", config_name="sample")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    sample(cfg)


if __name__ == "__main__":
    main()
