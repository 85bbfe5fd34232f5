"""Sample from a checkpoint: `python -m src.sample ckpt_path=... [num_samples=64 | prompt="ROMEO:"]`.

Needs only the checkpoint (its config rebuilds the model, and a text model's vocabulary rides in
it), not the dataset. Image models write a grid, samples.png; text models print their texts and
write them to samples.txt; both in the run folder.
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
    """Generate samples as the config says and write them to the run folder; return the file written."""
    model = model_from_checkpoint(load_checkpoint(cfg.ckpt_path))
    if not hasattr(model, "generate_text") and not hasattr(model, "sample"):
        raise ConfigError(
            f"{cfg.ckpt_path}: its model, {type(model).__name__}, does not generate samples (it has no sample "
            f"method); "
            f"evaluate it with: python -m src.eval ckpt_path={cfg.ckpt_path}"
        )
    if cfg.num_samples is not None and cfg.num_samples < 1:
        raise ConfigError(f"num_samples must be >= 1, got {cfg.num_samples}")
    L.seed_everything(cfg.seed)
    device = torch.device("cuda" if cfg.accelerator != "cpu" and torch.cuda.is_available() else "cpu")
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    model = model.to(device)
    with torch.no_grad():
        if hasattr(model, "generate_text"):
            return _write_texts(model, cfg, output_dir / "samples.txt")
        return _write_image_grid(model, cfg, output_dir / "samples.png")


def _write_texts(model: L.LightningModule, cfg: DictConfig, path: Path) -> Path:
    if cfg.max_new_tokens < 1:
        raise ConfigError(f"max_new_tokens must be >= 1, got {cfg.max_new_tokens}")
    texts = model.generate_text(
        cfg.prompt, cfg.max_new_tokens, cfg.temperature, cfg.top_k, cfg.top_p, cfg.num_samples or 1, seed=cfg.seed
    )
    separator = "\n\n" + "-" * 40 + "\n\n"
    print(separator.join(texts))
    path.write_text(separator.join(texts) + "\n")
    log.info(f"Wrote {len(texts)} text(s) of {cfg.max_new_tokens} new characters to {path}")
    return path


def _write_image_grid(model: L.LightningModule, cfg: DictConfig, path: Path) -> Path:
    num_samples = cfg.num_samples or 64
    images = model.sample(num_samples)  # (N, C, H, W) in [0, 1]
    save_image(images, path, nrow=cfg.nrow or math.ceil(math.sqrt(num_samples)))
    log.info(f"Wrote {num_samples} samples to {path}")
    return path


@hydra.main(version_base="1.3", config_path="../conf", config_name="sample")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    sample(cfg)


if __name__ == "__main__":
    main()
