"""Sample from a checkpoint: `python -m src.sample ckpt_path=... [num_samples=64 | prompt="ROMEO:"]`.

Models that sample in steps (diffusion, flow matching) also take steps=, sampler= and guidance_scale=.

Needs only the checkpoint (it names one of genlab's models and holds its hyperparameters, a text
model's vocabulary among them), not the dataset. Image models write a grid, samples.png; text
models print their texts and write them to samples.txt; both in the run folder.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import hydra
import lightning as L
import torch
from omegaconf import DictConfig
from torchvision.utils import save_image

from genlab.capabilities import ImageSampler, TextGenerator, use_sampling_options
from genlab.checkpoints import load_model
from genlab.errors import ConfigError
from genlab.models.previews.image_grid import tile_grid
from genlab.utils.config import CONF_DIR
from genlab.utils.failed_runs import exit_on_user_error
from genlab.utils.files import check_replaceable, replaced_atomically, write_text_atomically
from genlab.utils.signals import interruptible, signals_end_the_command

log = logging.getLogger(__name__)

# generated a batch at a time, so that the network's activations stay small whatever num_samples is
BATCH_SIZE = 500


def sample(cfg: DictConfig) -> Path:
    """Generate samples as the config says and write them to the run folder; return the file written."""
    check_options(cfg)
    if "data" in cfg:
        log.info(f"src.sample draws from the checkpoint alone: data ({cfg.data.get('_target_')}) is not used")
    device = torch.device("cuda" if cfg.accelerator != "cpu" and torch.cuda.is_available() else "cpu")
    model = load_model(cfg.ckpt_path, map_location=device, trained=cfg.model)  # model.first_stage=...: see conf
    if not isinstance(model, (TextGenerator, ImageSampler)):
        raise ConfigError(
            f"{cfg.ckpt_path}: its model, {type(model).__name__}, does not generate samples (it is neither an "
            f"ImageSampler nor a TextGenerator); evaluate it with: python -m src.eval ckpt_path={cfg.ckpt_path}"
        )
    use_sampling_options(model, cfg)  # steps=, sampler=, guidance_scale=: refused for models that take none
    L.seed_everything(cfg.seed)
    path = Path(cfg.paths.output_dir) / ("samples.txt" if isinstance(model, TextGenerator) else "samples.png")
    check_replaceable(path, "the samples")  # not after the sampling
    with interruptible("sampling", "Run the same command again"), torch.no_grad():
        if isinstance(model, TextGenerator):
            prompt = Path(cfg.prompt_file).read_text() if cfg.prompt_file else cfg.prompt  # nanoGPT's start=FILE:
            texts = model.generate_text(
                prompt, cfg.max_new_tokens, cfg.temperature, cfg.top_k, cfg.top_p, cfg.num_samples or 1, seed=cfg.seed
            )
        else:
            num_samples = cfg.num_samples or 64
            check_fits_in_memory(model, num_samples)
            images = torch.cat(
                [
                    model.sample(min(BATCH_SIZE, num_samples - start)).cpu()
                    for start in range(0, num_samples, BATCH_SIZE)
                ]
            )
    if isinstance(model, TextGenerator):
        separator = "\n\n" + "-" * 40 + "\n\n"
        print(terminal_safe(separator.join(texts)))
        write_text_atomically(path, separator.join(texts) + "\n", "the samples")
        log.info(f"Wrote {len(texts)} text(s) of {cfg.max_new_tokens} new tokens to {path}")
    else:
        # (N, C, H, W) in [0, 1], tiles drawn at a legible size as the training pictures are
        with replaced_atomically(path, "wb", "the samples") as file:
            save_image(tile_grid(images, nrow=cfg.nrow or math.ceil(math.sqrt(len(images)))), file, format="png")
        log.info(f"Wrote {len(images)} samples to {path}")
    return path


def terminal_safe(text: str) -> str:
    """`text` with every character a terminal would act on (carriage return, escape sequences) written as its
    escape, e.g. `\\r`: the file keeps the text as generated, the console shows it."""
    return "".join(char if char.isprintable() or char in "\n\t" else repr(char)[1:-1] for char in text)


def check_options(cfg: DictConfig) -> None:
    """Refuse counts and options of the wrong type, before the checkpoint is read (models check the values of
    their own sampling options: text models temperature, top_k, top_p; diffusion models steps, sampler, guidance)."""
    for key in ("num_samples", "nrow", "max_new_tokens"):
        value = cfg[key]
        if not (value is None and key != "max_new_tokens") and (type(value) is not int or value < 1):
            raise ConfigError(f"{key}={value!r}: expected a whole number >= 1")
    if cfg.steps is not None and (type(cfg.steps) is not int or cfg.steps < 1):
        raise ConfigError(f"steps={cfg.steps!r}: expected a whole number >= 1 (or null: the model's own)")
    if cfg.sampler is not None and not isinstance(cfg.sampler, str):
        raise ConfigError(f"sampler={cfg.sampler!r}: expected a sampler's name, e.g. ddim (or null: the model's own)")
    if cfg.guidance_scale is not None and type(cfg.guidance_scale) not in (int, float):
        raise ConfigError(f"guidance_scale={cfg.guidance_scale!r}: expected a number (or null: the model's own)")
    if not isinstance(cfg.prompt, str):
        raise ConfigError(f"prompt={cfg.prompt!r}: expected text (quote it: 'prompt=\"To be, or not\"')")
    if cfg.prompt_file is not None and not Path(cfg.prompt_file).is_file():
        raise ConfigError(f"prompt_file={cfg.prompt_file}: no such file")


def check_fits_in_memory(model: ImageSampler, num_samples: int) -> None:
    """Refuse a grid whose images (float32, twice over: samples and grid) would not fit in the free memory."""
    image_bytes = 4 * model.sample(1).numel()
    needed = 2 * num_samples * image_bytes
    free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    if needed > free:
        raise ConfigError(
            f"num_samples={num_samples}: a grid of that many images needs about {needed / 2**30:.1f} GiB, and "
            f"{free / 2**30:.1f} GiB of memory is free; at most {free // (2 * image_bytes)} here"
        )


@signals_end_the_command
@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="sample")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    # every phase stops on one signal; the sampling below names itself
    with interruptible("loading the checkpoint, or writing the samples", "Run the same command again"):
        sample(cfg)


if __name__ == "__main__":
    main()
